"""The t5 family: T5 1.1 and mT5 encoder-decoders with T5X's parameter tree.

  config    T5Config and presets (t5_1_1_*, mt5_*)        network   Flax Transformer
  model     EncoderDecoderModel: loss, score, predict     features  seqio EncDec converter
  hf        transformers T5/MT5ForConditionalGeneration   testing   tiny configs, HF oracles
T5X checkpoints hold this family's tree as is (t0x.checkpoints.t5x).
"""

from t0x.models.family import ModelFamily
from t0x.models.t5 import features
from t0x.models.t5.config import CONFIGS, T5Config


def _make_model(config, **options):
    from t0x.models.t5.model import EncoderDecoderModel

    return EncoderDecoderModel(config, **options)


def _hf_load(path, **overrides):
    from t0x.models.t5 import hf

    return hf.load_hf(path, **overrides)


def _hf_save(path, params, config, overwrite=False):
    from t0x.models.t5 import hf

    return hf.save_hf(path, params, config, overwrite=overwrite)


FAMILY = ModelFamily(
    name="t5",
    config_class=T5Config,
    presets=CONFIGS,
    make_model=_make_model,
    feature_converter=features.feature_converter,
    token_keys=features.TOKEN_KEYS,
    hf_model_types=("t5", "mt5"),
    hf_load=_hf_load,
    hf_save=_hf_save,
    t5x_compatible=True,
    default_optimizer="adafactor",
)
