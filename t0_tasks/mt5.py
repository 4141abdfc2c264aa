"""`import t0_tasks.mt5`: every task re-registered with mT5's vocabulary, as mT0 trains.

mT0 recipes import it in gin (`import t0_tasks.mt5`), so the same task and mixture names
(`xp3`, `t0_train`, ...) serve T5 and mT5 runs, under T5X or t0x. The file is mT5's
SentencePiece model `mc4.250000.100extra` (extra_ids 0: it holds the sentinels, as T5X's
`mt5/base.gin` builds it); `T0_MT5_VOCAB` names a local copy. The switch lasts for the
process (an import runs once): call `t0_tasks.configure(vocab_path=...)` to change it again.
"""

import os

from t0_tasks.registry import configure

MT5_VOCAB = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"

configure(vocab_path=os.environ.get("T0_MT5_VOCAB", MT5_VOCAB))
