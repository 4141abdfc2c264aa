"""The `t0x` command: thin dispatch to library functions (which the tests call directly).

Expected failures (`t0x.errors`, t0_tasks' errors, bad arguments) print one line,
`t0x <command>: error: <what is wrong and the fix>`, and exit with their documented code
(see `EXIT_CODES`); `--debug` prints the traceback too. A job stopped by SIGTERM after
saving exits 143; rerunning the same command resumes it. Run as a program on a CPU, it first
keeps freed host memory for reuse (t0x/host_memory.py: no page faults per step).

`t0x eval`'s own flags become gin bindings of `t0x.evaluate` (they win over the gin files):
`--suite NAME` (repeatable or comma-separated) -> `suites`, `--checkpoint_dir RUN_DIR` ->
`checkpoint_path` and `all_steps = True`, `--all_steps` -> `all_steps = True`. Without
`--gin_file`, `runs/eval.gin` is read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _tasks(args) -> int:
    from t0_tasks import report

    if args.tasks_cmd == "list":
        print("\n".join(report.list_names(args.mixture)))
    elif args.tasks_cmd == "show":
        from t0_tasks import accounting

        accounting.COUNTS.clear()
        for i, ex in enumerate(report.examples(args.task, args.split, args.n)):
            print(f"--- example {i}")
            for key, value in ex.items():
                print(f"{key}: {value}")
        print(f"--- {report.accounting_line(args.task, args.split)}")
    else:
        rows = report.mixture_stats(
            args.mixture, args.steps, args.batch_size, args.examples_per_sequence
        )
        extra = f" {'rendered':>9s} {'dropped':>8s} {'empty':>6s}" if args.count_rows else ""
        print(f"{'task':70s} {'rate':>10s} {'share':>8s} {'seen':>10s} {'epochs':>7s}{extra}")
        for r in rows:
            epochs = f"{r.epochs:7.2f}" if r.epochs is not None else "      -"
            line = f"{r.task:70s} {r.rate:10.4g} {r.share:8.4%} {r.examples_seen:10.0f} {epochs}"
            if args.count_rows:
                c = report.count_rows(r.task, "train")
                line += f" {c['rendered']:9d} {c['dropped']:8d} {c['empty_target']:6d}"
            print(line)
        print(f"{len(rows)} tasks")
    return 0


def _gin_job(args, rest, job: str) -> int:
    from t0x import gin_config

    files, bindings, paths, unknown = gin_config.split_gin_flags(rest)
    if unknown:
        raise SystemExit(f"t0x {job}: unknown arguments {unknown}")
    if job == "eval":
        files = files or [DEFAULT_EVAL_GIN]
        bindings += _eval_bindings(args)
    gin_config.parse(files, bindings, paths)
    if job == "train":
        from t0x.jobs import train

        if args.topology:  # unknown slice / no libtpu: one line before anything is resolved
            from t0x import topologies

            topologies.describe(args.topology)
        result = train.train(plan=args.plan or bool(args.topology))
        if args.topology:
            return _compiled_plan(result, args.topology)
        if args.plan:
            print(json.dumps(result))
        elif result.preempted:
            return _preempted()
    else:
        from t0x.jobs import evaluate

        evaluate.evaluate()
    return 0


def _compiled_plan(train_plan: dict, slice_name: str) -> int:
    """`t0x train --plan --topology SLICE`: the recipe's train step compiled for the slice."""
    from t0x import aot
    from t0x.errors import ConfigError

    print(f"compiling the train step for {slice_name} (minutes for a large model) ...")
    plan = aot.compile_plan(slice_name=slice_name, **aot.plan_args(train_plan))
    for line in aot.summary_lines(plan):
        print(line)
    print(json.dumps({**train_plan, "compiled": plan}, default=str))
    if not plan["fits"]:
        raise ConfigError(f"the recipe does not fit {slice_name}: {plan['advice']}")
    return 0


def _eval_report(args) -> int:
    from t0x.eval import t5x_report

    results = t5x_report.write_t5x_report(
        args.eval_dir,
        args.output_dir,
        step=args.step,
        split=args.split,
        reference_file=args.reference_file,
        overwrite=args.overwrite,
    )
    out = args.output_dir or f"{args.eval_dir.rstrip('/')}/t0x_report"
    print(
        f"{results['run']['num_tasks']} tasks at step {results['run']['step']} -> {out}/results.md"
    )
    return 0


DEFAULT_EVAL_GIN = "runs/eval.gin"  # `t0x eval` without --gin_file


def _eval_bindings(args) -> list[str]:
    """Gin bindings for `t0x eval`'s own flags (they win over the gin files' macros)."""
    from t0x.eval import suites

    bindings = []
    if args.suite:
        names = [s.name for s in suites.parse(args.suite)]  # unknown names: one-line error
        bindings.append(f"t0x.evaluate.suites = {names!r}")
    if args.checkpoint_dir:
        bindings.append(f"t0x.evaluate.checkpoint_path = {args.checkpoint_dir!r}")
    if args.checkpoint_dir or args.all_steps:
        bindings.append("t0x.evaluate.all_steps = True")
    return bindings


def _infer(args) -> int:
    from t0x.jobs import infer

    prompts = list(args.prompts) or ([] if args.input else [l.rstrip("\n") for l in sys.stdin])
    if args.input:
        infer.infer_jsonl(
            args.checkpoint,
            args.input,
            args.output,
            method=args.method,
            num_beams=args.num_beams,
            temperature=args.temperature,
            vocab_path=args.vocab,
        )
        return 0
    for text in infer.infer(
        args.checkpoint,
        prompts,
        method=args.method,
        num_beams=args.num_beams,
        temperature=args.temperature,
        vocab_path=args.vocab,
    ):
        print(text)
    return 0


def _score(args) -> int:
    from t0x.jobs import score

    n = score.score_jsonl(
        args.checkpoint,
        args.input,
        args.output,
        vocab_path=args.vocab,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
    )
    print(f"scored {n} lines -> {args.output}")
    return 0


def _convert(args) -> int:
    from t0x.checkpoints import convert

    convert.convert(args.src, args.dst, getattr(args, "from"), args.to, overwrite=args.overwrite)
    print(f"wrote {args.to} checkpoint to {args.dst}")
    return 0


def _demo(args) -> int:
    from t0x.jobs import demo

    if args.multilingual:
        paths = demo.run_multilingual_demo(args.out or "runs/demo_mt0", steps=args.steps)
    else:
        paths = demo.run_demo(args.out or "runs/demo", steps=args.steps)
    return _preempted() if paths.get("preempted") else 0


def _preempted() -> int:
    from t0x.errors import Preempted

    print("t0x: stopped by SIGTERM after saving; rerun the same command to resume", file=sys.stderr)
    return Preempted.exit_code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="t0x",
        description="T0-style multitask prompted "
        "finetuning and zero-shot evaluation of T5, in JAX.",
        epilog="exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()),
    )
    p.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    sub = p.add_subparsers(dest="cmd", required=True)
    tasks = sub.add_parser("tasks", help="list, show and size the T0 tasks and mixtures")
    tsub = tasks.add_subparsers(dest="tasks_cmd", required=True)
    tsub.add_parser("list", help="task names").add_argument("--mixture")
    show = tsub.add_parser("show", help="rendered examples of a task")
    show.add_argument("task")
    show.add_argument("--split", default="validation")
    show.add_argument("-n", type=int, default=3)
    stats = tsub.add_parser("stats", help="per-task rate, share, examples and epochs seen")
    stats.add_argument("mixture")
    stats.add_argument("--steps", type=int, default=12_200)
    stats.add_argument("--batch-size", type=int, default=1024)
    stats.add_argument(
        "--examples-per-sequence",
        type=float,
        default=1.0,
        help="packed examples per sequence (1 = no packing)",
    )
    stats.add_argument(
        "--count-rows",
        action="store_true",
        help="render every train row: rows rendered, dropped by the template, empty targets",
    )
    for job, text in (
        ("train", "train with gin (--gin_file=... --gin.MACRO=VALUE)"),
        (
            "eval",
            "zero-shot evaluation with gin (default --gin_file=runs/eval.gin); suites, sweeps",
        ),
    ):
        j = sub.add_parser(job, help=text, prefix_chars="-")
        if job == "train":
            j.add_argument(
                "--plan",
                action="store_true",
                help="print what would run (JSON on the last line) and exit",
            )
            j.add_argument(
                "--topology",
                metavar="SLICE",
                help="with --plan: compile the train step for a TPU slice (e.g. v4-64) and "
                "report HBM, FLOPs, collectives and a roofline step time (needs the tpu extra)",
            )
        else:
            _add_eval_flags(j)
    inf = sub.add_parser("infer", help="generate from prompts (args, --input JSONL, or stdin)")
    inf.add_argument("prompts", nargs="*")
    inf.add_argument("--checkpoint", required=True)
    inf.add_argument("--input")
    inf.add_argument("--output")
    inf.add_argument("--method", choices=["greedy", "beam", "sample"], default="greedy")
    inf.add_argument("--num-beams", type=int, default=4)
    inf.add_argument("--temperature", type=float, default=1.0)
    inf.add_argument("--vocab")
    sc = sub.add_parser("score", help="log-likelihood of targets given inputs (JSONL)")
    sc.add_argument("--checkpoint", required=True)
    sc.add_argument("--input", required=True)
    sc.add_argument("--output", required=True)
    sc.add_argument("--vocab")
    sc.add_argument("--batch-size", type=int, default=32)
    sc.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    cv = sub.add_parser("convert", help="convert checkpoints between T5X, t0x and HF")
    cv.add_argument("--from", required=True, choices=["t5x", "hf", "t0x"])
    cv.add_argument("--to", required=True, choices=["t0x", "hf"])
    cv.add_argument("--overwrite", action="store_true")
    cv.add_argument("src")
    cv.add_argument("dst")
    demo = sub.add_parser("demo", help="train a tiny T0 on local data, then evaluate it")
    demo.add_argument("--out", default=None, help="default runs/demo (runs/demo_mt0)")
    demo.add_argument("--steps", type=int, default=None)
    demo.add_argument(
        "--multilingual",
        action="store_true",
        help="a tiny mT0 on the xP3 fixtures, evaluated on the multilingual suite",
    )
    rep = sub.add_parser(
        "eval-report", help="t0x's report (results.json/.md/.png) of a T5X eval output dir"
    )
    rep.add_argument("eval_dir", help="the EVAL_OUTPUT_DIR t5x/eval.py wrote")
    rep.add_argument("--output_dir", help="default <eval_dir>/t0x_report")
    rep.add_argument("--step", type=int, help="default: the latest step every task has")
    rep.add_argument("--split", default="validation")
    rep.add_argument("--reference_file")
    rep.add_argument("--overwrite", action="store_true")
    return p


def _add_eval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        action="append",
        metavar="NAME",
        help="an evaluation suite instead of the mixture (repeatable or comma-separated): "
        "t0_heldout, bigbench_t0, bias_fairness, multilingual",
    )
    parser.add_argument(
        "--checkpoint_dir",
        metavar="RUN_DIR",
        help="evaluate every saved step of this t0x run dir (a checkpoint sweep)",
    )
    parser.add_argument(
        "--all_steps",
        action="store_true",
        help="CHECKPOINT_PATH is a t0x run dir: evaluate every saved step",
    )


EXIT_CODES = {
    0: "success",
    1: "unexpected error (a bug: traceback printed)",
    2: "bad usage or configuration",
    3: "data: unknown task/mixture, missing rows or caches, malformed input",
    4: "checkpoint missing, damaged or not matching the run",
    5: "training diverged (NaN/Inf; nothing non-finite saved)",
    143: "stopped by SIGTERM after saving (rerun to resume)",
}
# builtin errors raised by argument checks throughout the library: usage errors
_USAGE_ERRORS = (KeyError, FileNotFoundError, FileExistsError, ValueError, NotADirectoryError)


def _run(args, rest) -> int:
    if args.cmd == "tasks":
        return _tasks(args)
    if args.cmd in ("train", "eval"):
        return _gin_job(args, rest, args.cmd)
    return {
        "infer": _infer,
        "score": _score,
        "convert": _convert,
        "demo": _demo,
        "eval-report": _eval_report,
    }[args.cmd](args)


def main(argv=None) -> int:
    if argv is None:  # run as a program: before JAX starts (t0x/host_memory.py)
        from t0x import host_memory

        host_memory.keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a != "--debug"]
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.cmd not in ("train", "eval"):
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    from t0x import errors

    try:
        return _run(args, rest)
    except Exception as e:  # noqa: BLE001 - expected failures become one line below
        code = errors.exit_code(e)
        if code is None and isinstance(e, _USAGE_ERRORS):
            code = 2
        if code is None:
            raise  # a bug: keep the traceback
        if debug:
            import traceback

            traceback.print_exc()
        msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
        msg = msg.split("\n  In call to configurable")[0]  # gin's note on where it was raised
        print(f"t0x {args.cmd}: error: {msg}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
