"""The bloom family: BLOOM decoder-only Transformers with ALiBi (BigScience; BLOOMZ).

  config    BloomConfig and presets (bloom_560m ... bloom_176b)   network  Flax Bloom
  model     DecoderOnlyModel: loss, score, predict                features causal-LM rows
  hf        transformers BloomForCausalLM / BloomModel folders    testing  tiny configs, oracles
T5X has no BLOOM tree: checkpoints come from Hugging Face or from t0x runs.
"""

from t0x.models.bloom import features
from t0x.models.bloom.config import PRESETS, BloomConfig
from t0x.models.family import ModelFamily


def _make_model(config, **options):
    from t0x.models.bloom.model import DecoderOnlyModel

    return DecoderOnlyModel(config, **options)


def _hf_load(path, **overrides):
    from t0x.models.bloom import hf

    return hf.load_hf(path, **overrides)


def _hf_save(path, params, config, overwrite=False):
    from t0x.models.bloom import hf

    return hf.save_hf(path, params, config, overwrite=overwrite)


FAMILY = ModelFamily(
    name="bloom",
    config_class=BloomConfig,
    presets=PRESETS,
    make_model=_make_model,
    feature_converter=features.feature_converter,
    token_keys=features.TOKEN_KEYS,
    hf_model_types=("bloom",),
    hf_load=_hf_load,
    hf_save=_hf_save,
    t5x_compatible=False,
    default_optimizer="adamw",
)
