"""What a model family is: the one contract the rest of the engine works from.

Vocabulary:
  family      a kind of network with its own parameter tree and batch layout: "t5" (T5 1.1 and
              mT5, encoder-decoder) and "bloom" (decoder-only). A family is one folder under
              `t0x/models/` whose `__init__` builds a `ModelFamily`, plus one line in
              `t0x.models.FAMILIES`.
  config      the family's frozen dataclass of hyperparameters (`config_class`); `presets` name
              the published sizes (`t5_1_1_xxl`, `mt5_xl`, `bloom_7b1`, ...). Every config has a
              `vocab_size`, a `dtype` (activations) and a `dropout_rate`.
  model       `make_model(config, **loss_options)`: owns loss, scoring and decoding; the
              `Model` protocol below lists what the engine calls.
  batch       what the family trains on: the output of `feature_converter(pack)` (a seqio
              FeatureConverter) applied to tasks with `inputs` and `targets`; `token_keys` name
              the batch features whose non-zero entries are real tokens (progress counts).
  checkpoint  mappings: Hugging Face (`hf_load(path) -> (params, config)`, `hf_save(path,
              params, config, overwrite)`, recognised by config.json's `model_type` in
              `hf_model_types`) and, where T5X has the family's tree, T5X (`t5x_compatible`).

The `Model` protocol (see t0x/models/t5/model.py for the reference implementation):
  config
  abstract_params_with_axes() -> (ShapeDtypeStruct tree, logical PartitionSpec tree)
  init_boxed(rng)             -> logically boxed params (for sharded init under jit)
  init_params(rng)            -> params (float32, unboxed)
  loss_fn(params, batch, dropout_rng) -> (scalar loss, metrics dict of sums)
  score(params, inputs [B, L], targets [B, C, T], weights [B, C, T]) -> [B, C]
              summed log-likelihood (times weights) of each of the C target sequences given
              its row's input; inputs are 0-padded on the right, targets end with EOS.
  predict(params, inputs [B, L], *, max_decode_length, method, num_beams, temperature,
          top_k, rng, alpha) -> tokens [B, T]  (EOS kept, zeros after it)
  eos_id
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    name: str
    config_class: type
    presets: Mapping[str, Any]
    make_model: Callable[..., Any]
    feature_converter: Callable[[bool], Any]
    token_keys: tuple[str, ...]
    hf_model_types: tuple[str, ...]
    hf_load: Callable[..., tuple[Any, Any]]
    hf_save: Callable[..., str]
    t5x_compatible: bool = False
    default_optimizer: str = "adafactor"

    def config_from_dict(self, fields: Mapping[str, Any]):
        """The family's config from a dict of its fields (as stored in checkpoint meta)."""
        known = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(fields) - known)
        if unknown:
            from t0x.errors import ConfigError

            raise ConfigError(
                f"{self.config_class.__name__} has no field(s) {unknown}: a config of another "
                f"family or version? Known fields: {sorted(known)}"
            )
        return self.config_class(**dict(fields))

    def preset(self, name: str):
        if name not in self.presets:
            from t0x.errors import ConfigError

            raise ConfigError(
                f"unknown {self.name} preset {name!r}: use one of {sorted(self.presets)}"
            )
        return self.presets[name]

    def count_tokens(self, batch: Mapping[str, Any]) -> tuple[int, int]:
        """(real tokens, token slots) of a host batch, over `token_keys`."""
        real = sum(int((batch[k] > 0).sum()) for k in self.token_keys if k in batch)
        slots = sum(int(batch[k].size) for k in self.token_keys if k in batch)
        return real, slots
