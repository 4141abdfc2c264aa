"""Test environment: offline fixture data, seqio's tiny vocabulary, 8 simulated devices.

Set before anything imports jax, TensorFlow or t0_tasks (which reads these at import).
"""

import os
from pathlib import Path

import seqio

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# CPU devices only, even where libtpu is installed (the `tpu` extra, for AOT plans): jax
# then never probes for TPU chips, and tests/test_aot.py compiles for TPU topologies anyway.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["T0_DATA_DIR"] = str(REPO / "tests" / "fixtures" / "hf")
os.environ["T0_STORY_CLOZE_DIR"] = str(REPO / "tests" / "fixtures" / "story_cloze")
os.environ["T0_VOCAB"] = str(
    Path(seqio.__file__).parent / "test_data" / "sentencepiece" / "sentencepiece.model"
)
os.environ["T0_MT5_VOCAB"] = os.environ["T0_VOCAB"]  # mT0 recipes' `import t0_tasks.mt5`
for var in (
    "T0_P3_DIR",
    "T0_HF_CACHE_DIR",
    "T0_XP3_DIR",
    "T0_XP3MT_DIR",
    "T0_BIGBENCH_DIR",
    "T0_EXTRA_IDS",
    "T0_TARGET_PREFIX",
):
    os.environ.pop(var, None)


import gin  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_gin_config():
    """Gin bindings are process-global: a test that parses a recipe (the demo binds
    KEEP_CHECKPOINTS = 2) must not configure the library calls of the next test."""
    yield
    with gin.unlock_config():
        gin.clear_config()
