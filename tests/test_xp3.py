"""xP3 / xP3mt as seqio data: streaming reads, host sharding, weights, errors, provenance tasks.

Fixtures: tests/fixtures/xp3 (release layout: ar, code, en, fr, zh), tests/fixtures/xp3mt (fr,
zh), tests/fixtures/xp3_build (build layout: en and zh, two (dataset, prompt) files each).
"""

from __future__ import annotations

import csv
import json
import os
import tracemalloc
from pathlib import Path

import pytest
import seqio
import tensorflow as tf

from t0_tasks import tasks, testing, xp3
from t0_tasks.settings import Settings

FIXTURES = testing.REPO_ROOT / "tests" / "fixtures"
XP3_DIR, XP3MT_DIR, BUILD_DIR = (FIXTURES / d for d in ("xp3", "xp3mt", "xp3_build"))
ROW = b'{"inputs": "a question", "targets": "an answer"}\n'


@pytest.fixture(scope="module")
def vocab():
    return tasks.vocabulary(Settings.from_env())


@pytest.fixture
def forget():
    yield
    xp3.forget()


def file_rows(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pairs(rows) -> list[tuple[str, str]]:
    return [(r["inputs"], r["targets"]) for r in rows]


def source_pairs(task: str, shard: seqio.ShardInfo | None = None) -> list[tuple[str, str]]:
    ds = seqio.get_mixture_or_task(task).source.get_dataset("train", False, shard_info=shard)
    return [(e["inputs"].decode(), e["targets"].decode()) for e in ds.as_numpy_iterator()]


# ---------------------------------------------------------------- streaming


def test_reader_yields_a_row_before_reading_the_next_line():
    def lines():
        yield ROW
        raise AssertionError("the reader asked for a second line before yielding the first row")

    assert next(xp3.read_rows(lines(), "gen")) == {"inputs": "a question", "targets": "an answer"}


def test_reading_a_large_file_holds_one_row_at_a_time(tmp_path):
    path = tmp_path / "merged_en.jsonl"
    row = json.dumps({"inputs": "x" * 1000, "targets": "y"}).encode() + b"\n"
    path.write_bytes(row * 16_000)  # 16 MB
    tracemalloc.start()
    try:
        n = sum(1 for _ in xp3.iter_rows([str(path)]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 16_000
    assert peak < 2 * 2**20, f"peak Python memory {peak / 2**20:.1f} MiB for a 16 MB file"


def test_first_example_arrives_before_a_bad_last_line_is_read(tmp_path, vocab, forget):
    lang = tmp_path / "xp3" / "fr"
    lang.mkdir(parents=True)
    path = lang / "merged_fr.jsonl"
    path.write_bytes(ROW * 3 + b"\n" + b'{"inputs": "no target"}\n')
    xp3.register(str(tmp_path / "xp3"), None, vocab)
    ds = seqio.get_mixture_or_task("xp3_fr").get_dataset(None, "train", shuffle=False)
    it = ds.as_numpy_iterator()
    assert next(it)["inputs_pretokenized"] == b"a question"
    with pytest.raises(tf.errors.OpError, match=f"{path}:5: missing field"):
        list(it)


# ---------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    "line, problem",
    [
        (b'{"inputs": "a", "targets": ', "invalid JSON"),
        (b'["inputs", "targets"]', "not a JSON object"),
        (b'{"inputs": "a"}', r"missing field\(s\) \['targets'\]"),
        (b'{"inputs": 3, "targets": "b"}', "field 'inputs' is int, not a string"),
        (b'{"inputs": "\xff", "targets": "b"}', "not UTF-8"),
    ],
)
def test_bad_rows_fail_with_file_and_line(tmp_path, line, problem):
    path = tmp_path / "merged_en.jsonl"
    path.write_bytes(ROW + b"\n" + line + b"\n" + ROW)
    with pytest.raises(xp3.XP3FormatError, match=rf"^{path}:3: {problem}.*fix or remove"):
        list(xp3.iter_rows([str(path)]))


# ---------------------------------------------------------------- registration and tasks


def test_release_layout_tasks_and_features(vocab, forget):
    reg = xp3.register(str(XP3_DIR), None, vocab)
    assert reg.language_tasks == {"xp3": {l: f"xp3_{l}" for l in ("ar", "code", "en", "fr", "zh")}}
    assert reg.prompt_tasks == [] and list(reg.mixtures) == ["xp3"]
    task = seqio.get_mixture_or_task("xp3_zh")
    assert task.splits == ("train",)
    got = list(task.get_dataset(None, "train", shuffle=False).as_numpy_iterator())
    want = file_rows(XP3_DIR / "zh" / "merged_zh.jsonl")
    assert [e["inputs_pretokenized"].decode() for e in got] == [r["inputs"] for r in want]
    assert [e["targets_pretokenized"].decode() for e in got] == [r["targets"] for r in want]
    assert "图书馆" in got[0]["inputs_pretokenized"].decode()  # non-Latin text intact
    assert all(e["targets"][-1] == 1 and e["inputs"][-1] != 1 for e in got)  # EOS on targets


def test_two_hosts_read_every_row_exactly_once_by_row(vocab, forget):
    """One file per language: rows are dealt alternately (row k -> host k mod 2)."""
    xp3.register(str(XP3_DIR), None, vocab)
    task = seqio.get_mixture_or_task("xp3_en")
    hosts = [
        [
            (e["inputs_pretokenized"].decode(), e["targets_pretokenized"].decode())
            for e in task.get_dataset(
                None, "train", shuffle=False, shard_info=seqio.ShardInfo(i, 2)
            ).as_numpy_iterator()
        ]
        for i in (0, 1)
    ]
    want = pairs(file_rows(XP3_DIR / "en" / "merged_en.jsonl"))
    assert sorted(hosts[0] + hosts[1]) == sorted(want)
    assert not set(hosts[0]) & set(hosts[1])
    assert hosts[0] == want[0::2] and hosts[1] == want[1::2]
    for lang in ("zh", "code"):  # odd row counts split 4 + 3, still exactly once
        want = pairs(file_rows(XP3_DIR / lang / f"merged_{lang}.jsonl"))
        got = [source_pairs(f"xp3_{lang}", seqio.ShardInfo(i, 2)) for i in (0, 1)]
        assert sorted(got[0] + got[1]) == sorted(want)
        assert len(got[0]) - len(got[1]) in (0, 1)


def test_hosts_read_whole_files_when_there_are_enough(vocab, forget):
    """xp3_en of the build layout has two files: each of 2 hosts reads one; with 3 hosts
    (more hosts than files) rows are dealt instead, still exactly once."""
    xp3.register(str(BUILD_DIR), None, vocab)
    files = sorted((BUILD_DIR / "en").glob("*.jsonl"))
    per_file = [pairs(file_rows(f)) for f in files]
    got = [source_pairs("xp3_en", seqio.ShardInfo(i, 2)) for i in (0, 1)]
    assert got == per_file
    got3 = [source_pairs("xp3_en", seqio.ShardInfo(i, 3)) for i in range(3)]
    assert sorted(sum(got3, [])) == sorted(sum(per_file, []))
    assert sum(len(g) for g in got3) == sum(len(f) for f in per_file)


def test_prompt_tasks_from_the_build_layout(vocab, forget):
    reg = xp3.register(str(BUILD_DIR), None, vocab)
    by_file = {
        "xp3_wiki_qa_train_Is_This_True_": "en/xp3_wiki_qa_train_Is_This_True?.jsonl",
        "xp3_cos_e_v1.11_train_question_option_description_text": (
            "en/xp3_cos_e_v1.11_train_question_option_description_text.jsonl"
        ),
        "xp3_paws_x_zh_train_Concatenation": "zh/xp3_paws-x_zh_train_Concatenation.jsonl",
        "xp3_clue_tnews_train_news_topic": "zh/xp3_clue_tnews_train_news_topic.jsonl",
    }
    assert sorted(reg.prompt_tasks) == sorted(by_file)
    for task, rel in by_file.items():
        want = pairs(file_rows(BUILD_DIR / rel))
        assert source_pairs(task) == want
        assert seqio.get_mixture_or_task(task).num_input_examples("train") == len(want)
    assert [t for t, _ in reg.mixtures["xp3"]] == ["xp3_en", "xp3_zh"]  # prompt tasks: none
    mt = xp3.register(None, str(BUILD_DIR), vocab)
    assert "xp3mt_wiki_qa_train_Is_This_True_" in mt.prompt_tasks


def test_xp3x_rows_group_into_prompt_tasks(tmp_path, vocab, forget):
    def row(i, template, language="zho_Hans"):
        return {
            "inputs": f"{template} input {i}",
            "targets": f"target {i}",
            "language": language,
            "dataset": "paws-x",
            "config": "zh",
            "split": "train",
            "template": template,
        }

    a = [row(i, "Concatenation" if i % 3 else "Meaning") for i in range(10)]
    b = [row(i, "Meaning", "eng_Latn") for i in range(10, 13)] + [row(13, "Meaning")]
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path, rows in zip(paths, (a, b)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    names = xp3.register_xp3x([str(p) for p in paths], vocab)
    assert names == [
        "xp3x_eng_Latn_paws_x_zh_train_Meaning",
        "xp3x_zho_Hans_paws_x_zh_train_Concatenation",
        "xp3x_zho_Hans_paws_x_zh_train_Meaning",
    ]
    meaning = pairs(
        [r for r in a + b if r["template"] == "Meaning" and r["language"] != "eng_Latn"]
    )
    assert source_pairs(names[2]) == meaning
    assert seqio.get_mixture_or_task(names[2]).num_input_examples("train") == len(meaning) == 5
    hosts = [source_pairs(names[2], seqio.ShardInfo(i, 2)) for i in (0, 1)]
    assert sorted(hosts[0] + hosts[1]) == sorted(meaning) and not set(hosts[0]) & set(hosts[1])
    (tmp_path / "bad.jsonl").write_bytes(ROW)
    with pytest.raises(xp3.XP3FormatError, match=r"bad.jsonl:1: missing provenance field"):
        xp3.register_xp3x([str(tmp_path / "bad.jsonl")], vocab)


# ---------------------------------------------------------------- weights and mixtures


def reference_weights() -> dict[str, float]:
    path = testing.reference_or_skip() / "xp3_language_weights.csv"
    with open(path, newline="", encoding="utf-8") as f:
        return {r["language"]: float(r["weight"]) for r in csv.DictReader(f)}


def test_package_weights_are_the_reference_table():
    ref = reference_weights()
    assert xp3.published_weights() == ref
    assert len(ref) == 46 and sum(ref.values()) == pytest.approx(1.0137, abs=1e-4)
    norm = xp3.language_weights()
    assert sum(norm.values()) == pytest.approx(1.0)
    assert norm["en"] / norm["code"] == pytest.approx(ref["en"] / ref["code"])


def test_mixtures_follow_the_reference_weights(vocab, forget):
    ref = reference_weights()
    reg = xp3.register(str(XP3_DIR), str(XP3MT_DIR), vocab)
    langs = ("ar", "code", "en", "fr", "zh")
    total = sum(ref[l] for l in langs)
    assert dict(reg.mixtures["xp3"]) == pytest.approx({f"xp3_{l}": ref[l] / total for l in langs})
    mt = dict(reg.mixtures["xp3mt"])  # a language's weight shared by bytes with xP3mt
    assert sum(mt.values()) == pytest.approx(1.0)
    for lang in ("fr", "zh"):
        sizes = [os.path.getsize(d / lang / f"merged_{lang}.jsonl") for d in (XP3_DIR, XP3MT_DIR)]
        rates = [mt[f"xp3_{lang}"], mt[f"xp3mt_{lang}"]]
        assert sum(rates) == pytest.approx(ref[lang] / total)
        assert rates[0] / rates[1] == pytest.approx(sizes[0] / sizes[1])
    assert mt["xp3_en"] == pytest.approx(ref["en"] / total)
    mixture = seqio.get_mixture_or_task("xp3mt")
    assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == pytest.approx(mt)


def test_language_subset_mixture_renormalises(vocab, forget):
    ref = reference_weights()
    xp3.register(str(XP3_DIR), str(XP3MT_DIR), vocab)
    members = dict(xp3.xp3_mixture("xp3_zh_ar", ["zh", "ar"]))
    total = ref["zh"] + ref["ar"]
    assert members == pytest.approx({"xp3_zh": ref["zh"] / total, "xp3_ar": ref["ar"] / total})
    assert "xp3_zh_ar" in seqio.MixtureRegistry.names()
    with_mt = dict(xp3.xp3_mixture("xp3mt_zh_ar", ["zh", "ar"], include_mt=True))
    assert set(with_mt) == {"xp3_zh", "xp3mt_zh", "xp3_ar"}
    assert with_mt["xp3_zh"] + with_mt["xp3mt_zh"] == pytest.approx(ref["zh"] / total)
    with pytest.raises(KeyError, match=r"no xp3 task for language\(s\) \['sw'\]"):
        xp3.xp3_mixture("bad", ["zh", "sw"])
    with pytest.raises(KeyError, match="no xP3 weight for language"):
        xp3.language_weights(["zh", "de"])
    xp3.forget()
    assert "xp3_zh_ar" not in seqio.MixtureRegistry.names()
    assert "xp3_zh" not in seqio.TaskRegistry.names()


def test_unweighted_languages_get_tasks_but_no_share(tmp_path, vocab, forget):
    for lang in ("zh", "de"):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / f"merged_{lang}.jsonl").write_bytes(ROW)
    reg = xp3.register(str(tmp_path), None, vocab)
    assert set(reg.language_tasks["xp3"]) == {"de", "zh"}
    assert reg.mixtures["xp3"] == [("xp3_zh", pytest.approx(1.0))]


def test_missing_folder_names_the_setting(tmp_path, vocab, forget):
    with pytest.raises(FileNotFoundError, match="T0_XP3_DIR"):
        xp3.register(str(tmp_path / "nowhere"), None, vocab)
    with pytest.raises(FileNotFoundError, match=r"merged_<lang>\.jsonl"):
        xp3.register(str(tmp_path), None, vocab)


# ---------------------------------------------------------------- sizes


def test_sizes_are_counted_on_request_and_cached_per_file_version(
    tmp_path, vocab, forget, monkeypatch
):
    (tmp_path / "fr").mkdir()
    path = tmp_path / "fr" / "merged_fr.jsonl"
    path.write_bytes(ROW * 4 + b"\n")

    def no_counting(*args):
        raise AssertionError("registration counted rows")

    with monkeypatch.context() as m:
        m.setattr(xp3, "_count_rows", no_counting)
        xp3.register(str(tmp_path), None, vocab)
    task = seqio.get_mixture_or_task("xp3_fr")
    assert task.num_input_examples("train") == 4
    hits = xp3._count_rows.cache_info().hits
    assert task.num_input_examples("train") == 4
    assert xp3._count_rows.cache_info().hits == hits + 1
    with open(path, "ab") as f:
        f.write(ROW)
    os.utime(path, ns=(1, 1))  # a new mtime: counted again
    assert task.num_input_examples("train") == 5


# ---------------------------------------------------------------- the hub


def test_hub_root_streams_through_the_json_loader(monkeypatch, vocab, forget):
    import datasets

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return iter([{"inputs": "你好", "targets": "hello"}, {"inputs": "再见", "targets": "bye"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    reg = xp3.register(xp3.HUB_XP3, None, vocab)
    assert set(reg.language_tasks["xp3"]) == set(xp3.published_weights())
    assert dict(reg.mixtures["xp3"]) == pytest.approx(
        {f"xp3_{l}": w for l, w in xp3.language_weights().items()}
    )
    task = seqio.get_mixture_or_task("xp3_zh")
    url = "hf://datasets/bigscience/xP3/zh/merged_zh.jsonl"
    assert task.source.files == (url,)
    assert task.num_input_examples("train") is None
    assert source_pairs("xp3_zh", seqio.ShardInfo(1, 2)) == [("再见", "bye")]
    assert calls == [
        (("json",), {"data_files": {"train": [url]}, "split": "train", "streaming": True})
    ]


def test_fixture_layouts_are_what_the_module_doc_says():
    for root in (XP3_DIR, XP3MT_DIR):
        for lang_dir in root.iterdir():
            assert [p.name for p in lang_dir.iterdir()] == [f"merged_{lang_dir.name}.jsonl"]
            assert 5 <= len(file_rows(next(lang_dir.iterdir()))) <= 20
    assert {p.parent.name for p in BUILD_DIR.glob("*/xp3_*.jsonl")} == {"en", "zh"}
    assert Path(XP3_DIR / "code").is_dir()
