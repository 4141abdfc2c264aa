"""`make demo` end to end, shortened: train a few steps on fixture rows, evaluate, report."""

import json

import pytest

import t0_tasks
from t0x.jobs import demo


@pytest.mark.slow
def test_demo_trains_evaluates_and_reports(tmp_path, capsys):
    settings = t0_tasks.current().settings
    try:
        paths = demo.run_demo(str(tmp_path / "demo"), steps=4)
    finally:
        t0_tasks.register(settings)
    out = capsys.readouterr().out
    assert "step 4/4" in out and "loss per target token" in out
    results = json.loads((tmp_path / "demo" / "eval" / "results.json").read_text())
    for name in ("super_glue/rte", "super_glue/cb", "anli", "anli/r1", "story_cloze/2016"):
        d = results["datasets"][name]
        assert 0 <= d["min"] <= d["median"] <= d["max"] <= 100 and d["prompts"]
    for name in ("results.md", "results.png"):
        assert (tmp_path / "demo" / "eval" / name).stat().st_size > 0
    assert (tmp_path / "demo" / "model" / "checkpoints" / "4").is_dir()
    operative = (tmp_path / "demo" / "model" / "operative_config.gin").read_text()
    assert "BATCH_SIZE = 16" in operative and "train.batch_size = %BATCH_SIZE" in operative
    assert "T5Config.emb_dim = 64" in operative
    assert paths["eval"].endswith("eval")
