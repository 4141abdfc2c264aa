"""Where t0_tasks finds its data and vocabulary: one settings object.

Vocabulary:
  data_dir        local copies of Hugging Face datasets laid out as
                  `<data_dir>/<dataset>/<subset or "default">/<split>.jsonl` (rows in the
                  dataset's HF schema). Checked before the HF hub/cache.
  hf_cache_dir    the `datasets` cache directory (None: the library's default). With
                  `HF_DATASETS_OFFLINE=1` only what is already cached is used.
  story_cloze_dir the folder holding the two manually downloaded Story Cloze CSVs.
  p3_dir          a local (or gs://) copy of P3, i.e. seqio caches `<p3_dir>/<task>/...`;
                  tasks read it with `use_cached=True` and render nothing.
  vocab_path      the vocabulary (t0_tasks.vocabularies): a SentencePiece model (T5's
                  cc_all.32000.100extra by default; mT5's mc4.250000.100extra for mT0) or a
                  Hugging Face tokenizer.json (BLOOM's, for BLOOMZ).
  extra_ids       sentinel ids added on top of the vocabulary: 0, since the *.100extra
                  SentencePiece models already hold T5's 100 sentinels (T5X builds them so).
  target_prefix   prepended to every target and answer choice when rendering: "" for T5 and
                  mT5; " " for BLOOMZ, which BigScience trained and evaluated with a space
                  before every target (P3 caches are pre-rendered and keep their targets).
  xp3_dir         xP3: a folder or gs:// path with <lang>/merged_<lang>.jsonl (or the build
                  layout <lang>/xp3_*.jsonl), or hf://datasets/bigscience/xP3; None: no xP3 tasks.
  xp3mt_dir       the same for xP3mt (hf://datasets/bigscience/xP3mt).
  bigbench_dir    BIG-bench's benchmark_tasks folder (or a checkout holding it); None: the
                  installed `bigbench` package's, when there is one.

Every field can be set from the environment (`T0_DATA_DIR`, `T0_HF_CACHE_DIR`,
`T0_STORY_CLOZE_DIR`, `T0_P3_DIR`, `T0_VOCAB`, `T0_EXTRA_IDS`, `T0_TARGET_PREFIX`,
`T0_XP3_DIR`, `T0_XP3MT_DIR`, `T0_BIGBENCH_DIR`) or by `t0_tasks.configure(...)`, which
re-registers every task so the change is seen everywhere. Reading settings never touches
the network.
"""

from __future__ import annotations

import dataclasses
import os

DEFAULT_VOCAB = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
DEFAULT_EXTRA_IDS = 0  # the *.100extra models hold the sentinels already (as in T5X)

_ENV = {
    "data_dir": "T0_DATA_DIR",
    "hf_cache_dir": "T0_HF_CACHE_DIR",
    "story_cloze_dir": "T0_STORY_CLOZE_DIR",
    "p3_dir": "T0_P3_DIR",
    "vocab_path": "T0_VOCAB",
    "extra_ids": "T0_EXTRA_IDS",
    "target_prefix": "T0_TARGET_PREFIX",
    "xp3_dir": "T0_XP3_DIR",
    "xp3mt_dir": "T0_XP3MT_DIR",
    "bigbench_dir": "T0_BIGBENCH_DIR",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: str | None = None
    hf_cache_dir: str | None = None
    story_cloze_dir: str | None = None
    p3_dir: str | None = None
    vocab_path: str = DEFAULT_VOCAB
    extra_ids: int = DEFAULT_EXTRA_IDS
    target_prefix: str = ""
    xp3_dir: str | None = None
    xp3mt_dir: str | None = None
    bigbench_dir: str | None = None

    @classmethod
    def from_env(cls) -> "Settings":
        values = {field: os.environ[var] for field, var in _ENV.items() if os.environ.get(var)}
        if "extra_ids" in values:
            values["extra_ids"] = int(values["extra_ids"])
        return cls(**values)

    def replace(self, **changes) -> "Settings":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(
                f"unknown t0_tasks setting(s) {sorted(unknown)}; "
                f"known: {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)
