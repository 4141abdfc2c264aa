"""Reading checkpoints written by T5X itself, and `t0x convert` from them.

The oracle is T5X's own test data (`../shared/reference/t5x_testdata/`): each format is
checked against its own bytes, decoded independently of the reader under test.
"""

import dataclasses
import importlib.util
import json
import os
import shutil
from pathlib import Path

import msgpack
import numpy as np
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import tensorstore as ts  # noqa: E402

from t0x import checkpoints
from t0x.checkpoints import convert
from t0x.checkpoints import t5x as t5x_checkpoint  # noqa: E402
from t0x.checkpoints.t5x import T5XCheckpointError  # noqa: E402

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "t5x_testdata"
if not REF.is_dir():
    pytest.skip(
        f"T5X test checkpoints not found at {REF} (../shared/reference absent)",
        allow_module_level=True,
    )
LEGACY = REF / "test_t5_tiny.checkpoint_0"
TS_DIR = REF / "tiny_t5" / "checkpoint_1"
ORBAX_DIR = REF / "tiny_orbax" / "1"
HAVE_HF = importlib.util.find_spec("t0x.models.t5.hf") is not None


# ------------------------------------------------------------ an independent decoder


def _ext_hook(code, data):
    """flax msgpack ext types: 1 = ndarray (shape, dtype, bytes), 3 = numpy scalar."""
    if code in (1, 3):
        shape, dtype, buf = msgpack.unpackb(data)
        return np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape)
    raise AssertionError(f"unexpected msgpack ext type {code}")


def _raw(path: Path) -> dict:
    return msgpack.unpackb(path.read_bytes(), ext_hook=_ext_hook, strict_map_key=False)


def _flat(tree, prefix=""):
    if isinstance(tree, dict) and not t5x_checkpoint._is_ts_spec(tree):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}/{k}" if prefix else k))
        return out
    return {prefix: tree}


def _ts_read_direct(spec: dict, directory: Path) -> np.ndarray:
    """What tensorstore returns for a T5X spec opened by hand (metadata from the spec)."""
    spec = json.loads(json.dumps(spec))
    spec["kvstore"] = {"driver": "file", "path": str(directory / spec["kvstore"]["path"])}
    return ts.open(spec, open=True, assume_metadata=True).result().read().result()


# ------------------------------------------------------------ legacy single msgpack file


def test_legacy_msgpack_params_equal_file_contents():
    raw = _raw(LEGACY)
    assert raw["version"] == 3
    want = _flat(raw["optimizer"]["target"])
    got = _flat(t5x_checkpoint.read_t5x_params(LEGACY))
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_legacy_msgpack_key_layout_and_shapes():
    p = _flat(t5x_checkpoint.read_t5x_params(LEGACY))
    expected = {
        "token_embedder/embedding": (32128, 8),
        "encoder/layers_0/attention/query/kernel": (8, 12),
        "encoder/layers_1/attention/out/kernel": (12, 8),
        "encoder/layers_0/mlp/wi_0/kernel": (8, 16),
        "encoder/layers_0/mlp/wi_1/kernel": (8, 16),
        "encoder/layers_0/mlp/wo/kernel": (16, 8),
        "encoder/layers_0/pre_attention_layer_norm/scale": (8,),
        "encoder/encoder_norm/scale": (8,),
        "encoder/relpos_bias/rel_embedding": (4, 32),
        "decoder/relpos_bias/rel_embedding": (4, 32),
        "decoder/layers_1/self_attention/key/kernel": (8, 12),
        "decoder/layers_1/encoder_decoder_attention/value/kernel": (8, 12),
        "decoder/layers_0/pre_cross_attention_layer_norm/scale": (8,),
        "decoder/decoder_norm/scale": (8,),
        "decoder/logits_dense/kernel": (8, 32128),
    }
    for key, shape in expected.items():
        assert p[key].shape == shape, key
        assert p[key].dtype == np.float32, key
    # encoder 2 x (4 attention + 3 mlp + 2 norms) + norm + relpos; decoder 2 x (8 + 3 + 3)
    # + norm + relpos + logits_dense; token_embedder
    assert len(p) == 20 + 31 + 1


def test_legacy_msgpack_step_state_and_config():
    raw = _raw(LEGACY)
    assert t5x_checkpoint.read_t5x_step(LEGACY) == int(raw["optimizer"]["state"]["step"]) == 0
    state = t5x_checkpoint.read_t5x_state(LEGACY)
    np.testing.assert_array_equal(
        state["state"]["param_states"]["token_embedder"]["embedding"]["v"],
        raw["optimizer"]["state"]["param_states"]["token_embedder"]["embedding"]["v"],
    )
    cfg = t5x_checkpoint.infer_config_from_params(t5x_checkpoint.read_t5x_params(LEGACY))
    assert cfg == {
        "vocab_size": 32128,
        "emb_dim": 8,
        "num_heads": 4,
        "head_dim": 3,
        "num_encoder_layers": 2,
        "num_decoder_layers": 2,
        "mlp_dim": 16,
        "mlp_activations": ("gelu", "linear"),
        "logits_via_embedding": False,
        "relative_attention_num_buckets": 32,
    }


def test_infer_config_num_heads_argument():
    params = t5x_checkpoint.read_t5x_params(LEGACY)
    assert t5x_checkpoint.infer_config_from_params(params, num_heads=4)["head_dim"] == 3
    with pytest.raises(T5XCheckpointError, match="num_heads=6 disagrees"):
        t5x_checkpoint.infer_config_from_params(params, num_heads=6)
    no_rel = {
        **params,
        "encoder": {k: v for k, v in params["encoder"].items() if k != "relpos_bias"},
    }
    with pytest.raises(T5XCheckpointError, match="pass num_heads"):
        t5x_checkpoint.infer_config_from_params(no_rel)
    assert t5x_checkpoint.infer_config_from_params(no_rel, num_heads=2)["head_dim"] == 6
    with pytest.raises(T5XCheckpointError, match="not a T5X minimal-T5 tree"):
        t5x_checkpoint.infer_config_from_params({"dense": {"kernel": np.zeros((2, 2))}})


def test_legacy_params_fit_the_t0x_network_unrenamed():
    from flax import linen as nn

    from t0x.models.t5 import network

    params = t5x_checkpoint.read_t5x_params(LEGACY)
    cfg = network.T5Config(**t5x_checkpoint.infer_config_from_params(params))
    assert cfg == network.CONFIGS["t5_1_1_tiny"]
    tokens = jax.numpy.ones((1, 4), jax.numpy.int32)
    init = jax.eval_shape(
        lambda r: network.Transformer(cfg).init(r, tokens, tokens, tokens, enable_dropout=False),
        jax.random.key(0),
    )
    want = {k: v.shape for k, v in _flat(nn.unbox(init)["params"]).items()}
    assert {k: v.shape for k, v in _flat(params).items()} == want


def test_read_with_dtype_and_onto_a_mesh():
    params = t5x_checkpoint.read_t5x_params(LEGACY)
    bf16 = t5x_checkpoint.read_t5x_params(LEGACY, dtype="bfloat16")
    q = "encoder/layers_0/attention/query/kernel"
    assert _flat(bf16)[q].dtype == jax.numpy.bfloat16
    np.testing.assert_array_equal(_flat(bf16)[q], _flat(params)[q].astype(jax.numpy.bfloat16))

    n = len(jax.devices())
    mesh = jax.make_mesh((n,), ("data",))
    spec = jax.sharding.PartitionSpec

    def abstract(x):
        axes = spec("data") if x.ndim and x.shape[0] % n == 0 else spec()
        return jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=jax.sharding.NamedSharding(mesh, axes)
        )

    sharded = t5x_checkpoint.read_t5x_params(LEGACY, abstract_params=jax.tree.map(abstract, params))
    emb = sharded["token_embedder"]["embedding"]
    assert emb.sharding.spec == spec("data")
    for k, v in _flat(params).items():
        np.testing.assert_array_equal(np.asarray(_flat(sharded)[k]), v, err_msg=k)
    bad = jax.tree.map(abstract, params)
    bad["token_embedder"]["embedding"] = jax.ShapeDtypeStruct((32000, 8), np.float32)
    with pytest.raises(T5XCheckpointError, match="token_embedder/embedding"):
        t5x_checkpoint.read_t5x_params(LEGACY, abstract_params=bad)


# ------------------------------------------------------------ directory (tensorstore) format


def test_directory_format_arrays_equal_direct_tensorstore_reads():
    raw = _raw(TS_DIR / "checkpoint")
    specs = raw["optimizer"]["state"]["param_states"]
    state = t5x_checkpoint.read_t5x_state(TS_DIR)
    assert set(state["state"]["param_states"]) == {"bias", "kernel", "step"}
    for name, spec in specs.items():
        got = state["state"]["param_states"][name]
        want = _ts_read_direct(spec, TS_DIR)
        assert got.shape == tuple(spec["metadata"]["shape"]) == want.shape, name
        assert got.dtype == np.dtype(spec["dtype"]) == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert state["state"]["param_states"]["kernel"].shape == (10, 5)
    assert state["target"] == {} and t5x_checkpoint.read_t5x_params(TS_DIR) == {}


@pytest.mark.parametrize("given", [TS_DIR, TS_DIR / "checkpoint", TS_DIR.parent])
def test_directory_format_path_forms_and_step(given):
    ckpt = t5x_checkpoint.locate(given)
    assert ckpt.layout == "msgpack" and Path(ckpt.directory) == TS_DIR
    assert t5x_checkpoint.read_t5x_step(given) == 1
    assert convert.detect_format(given) == "t5x"


def test_relative_paths_resolve_against_the_checkpoint_dir(tmp_path, monkeypatch):
    copy = tmp_path / "model" / "checkpoint_1"
    shutil.copytree(TS_DIR, copy)
    os.chmod(copy / "state.param_states.kernel", 0o755)
    monkeypatch.chdir(tmp_path)
    want = t5x_checkpoint.read_t5x_state(TS_DIR)
    got = t5x_checkpoint.read_t5x_state("model")  # a model dir: its latest checkpoint_N
    np.testing.assert_array_equal(
        got["state"]["param_states"]["kernel"], want["state"]["param_states"]["kernel"]
    )
    (copy / "state.param_states.kernel" / "0.0").unlink()
    with pytest.raises(T5XCheckpointError, match=r"param_states/kernel.*missing"):
        t5x_checkpoint.read_t5x_state(copy)


def test_directory_format_params_read_per_shard(tmp_path):
    """Params stored as tensorstore arrays (T5X's kernel bytes, listed under `target`)."""
    copy = tmp_path / "checkpoint_1"
    shutil.copytree(TS_DIR, copy)
    os.chmod(copy, 0o755)
    raw = msgpack.unpackb((TS_DIR / "checkpoint").read_bytes(), strict_map_key=False)
    kernel_spec = raw["optimizer"]["state"]["param_states"]["kernel"]
    raw["optimizer"]["target"] = {"dense": {"kernel": kernel_spec}}
    (copy / "checkpoint").write_bytes(msgpack.packb(raw))
    want = _ts_read_direct(kernel_spec, TS_DIR)
    got = t5x_checkpoint.read_t5x_params(copy)
    np.testing.assert_array_equal(got["dense"]["kernel"], want)
    as_f32 = t5x_checkpoint.read_t5x_params(copy, dtype="float32")
    assert as_f32["dense"]["kernel"].dtype == np.float32

    devices = np.array(jax.devices()[:2])  # 10 rows split over 2 devices
    mesh = jax.sharding.Mesh(devices, ("data",))
    abstract = {
        "dense": {
            "kernel": jax.ShapeDtypeStruct(
                (10, 5),
                np.float32,
                sharding=(jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))),
            )
        }
    }
    sharded = t5x_checkpoint.read_t5x_params(copy, dtype="float32", abstract_params=abstract)
    kernel = sharded["dense"]["kernel"]
    assert kernel.dtype == np.float32 and kernel.sharding == abstract["dense"]["kernel"].sharding
    np.testing.assert_array_equal(np.asarray(kernel), want.astype(np.float32))


def test_gcs_specs_resolve_to_the_gcs_driver():
    spec = {
        "driver": "zarr",
        "dtype": "float32",
        "metadata": {"shape": [2]},
        "kvstore": {"driver": "gfile", "path": "target.encoder.x/"},
    }
    got = t5x_checkpoint._resolve_spec(spec, "gs://bucket/run/checkpoint_5")
    assert got["kvstore"] == {
        "driver": "gcs",
        "bucket": "bucket",
        "path": "run/checkpoint_5/target.encoder.x/",
    }
    assert spec["kvstore"]["driver"] == "gfile"  # the input is not modified


# ------------------------------------------------------------ orbax formats


def test_orbax_msgpack_recognised_params_and_step():
    ckpt = t5x_checkpoint.locate(ORBAX_DIR)
    assert ckpt.layout == "orbax-msgpack"
    raw = _raw(ORBAX_DIR / "checkpoint")
    assert raw["_optimizer"]["state"]["step"] == "PLACEHOLDER://_optimizer.state.step"
    assert t5x_checkpoint.read_t5x_params(ORBAX_DIR) == raw["_optimizer"]["target"] == {}
    assert t5x_checkpoint.read_t5x_step(ORBAX_DIR / "checkpoint") == 1  # from the dir name
    # T5X's test data carries the chunks but not the zarr metadata (.zarray):
    with pytest.raises(T5XCheckpointError, match=r"no zarr metadata \(\.zarray\)"):
        t5x_checkpoint.read_t5x_state(ORBAX_DIR)


def test_orbax_msgpack_placeholders_read_the_same_bytes_as_the_ts_format(tmp_path):
    """Given the metadata it lacks, the orbax copy reads equal to the tensorstore copy."""
    copy = tmp_path / "1"
    shutil.copytree(ORBAX_DIR, copy)
    specs = _raw(TS_DIR / "checkpoint")["optimizer"]["state"]["param_states"]
    specs["opt_step"] = specs["step"]
    for name, spec in specs.items():
        folder = copy / (
            "_optimizer.state.step"
            if name == "opt_step"
            else f"_optimizer.state.param_states.{name}"
        )
        os.chmod(folder, 0o755)
        meta = dict(
            spec["metadata"],
            compressor={"id": "zstd", "level": 1},
            dtype=np.dtype(spec["dtype"]).str,
            fill_value=None,
            order="C",
            filters=None,
            zarr_format=2,
        )
        (folder / ".zarray").write_text(json.dumps(meta))
    got = t5x_checkpoint.read_t5x_state(copy)
    want = t5x_checkpoint.read_t5x_state(TS_DIR)
    for name in ("bias", "kernel", "step"):
        np.testing.assert_array_equal(
            got["state"]["param_states"][name], want["state"]["param_states"][name]
        )
    assert int(got["state"]["step"]) == int(want["state"]["step"]) == 1


def test_orbax_state_dir_layout(tmp_path):
    """`checkpoint_N/state/` as T5X's orbax CheckpointManager lays it out (written here)."""
    import orbax.checkpoint as ocp

    params = {"encoder": {"layers_0": {"mlp": {"wo": {"kernel": np.arange(6.0).reshape(2, 3)}}}}}
    tree = {"target": params, "state": {"step": np.int32(7), "param_states": {}}}
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(tmp_path / "checkpoint_7" / "state", tree)
    ckptr.close()
    for given in (tmp_path, tmp_path / "checkpoint_7", tmp_path / "checkpoint_7" / "state"):
        assert t5x_checkpoint.locate(given).layout == "orbax"
        got = t5x_checkpoint.read_t5x_params(given)
        np.testing.assert_array_equal(
            got["encoder"]["layers_0"]["mlp"]["wo"]["kernel"],
            params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"],
        )
        assert t5x_checkpoint.read_t5x_step(given) == 7


# ------------------------------------------------------------ errors


def test_errors_name_the_path_and_what_was_expected(tmp_path):
    with pytest.raises(T5XCheckpointError, match="does not exist"):
        t5x_checkpoint.read_t5x_params(tmp_path / "nope")
    with pytest.raises(T5XCheckpointError, match=f"{tmp_path}.*not a T5X checkpoint"):
        t5x_checkpoint.read_t5x_params(tmp_path)
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    with pytest.raises(T5XCheckpointError, match="junk.txt is not a T5X checkpoint"):
        t5x_checkpoint.read_t5x_params(junk)
    tf_dir = tmp_path / "tf"
    tf_dir.mkdir()
    (tf_dir / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-0"\n')
    with pytest.raises(T5XCheckpointError, match="TensorFlow"):
        t5x_checkpoint.read_t5x_params(tf_dir)
    other = tmp_path / "other.msgpack"
    other.write_bytes(msgpack.packb({"weights": {"w": 1}}))
    with pytest.raises(T5XCheckpointError, match="expected top-level 'optimizer'"):
        t5x_checkpoint.read_t5x_params(other)
    with pytest.raises(convert.ConvertError, match="cannot tell the format"):
        convert.detect_format(tmp_path)


# ------------------------------------------------------------ convert


def _load(path):
    from t0x.checkpoints import load as loading

    ck = loading.load(path)
    return ck.params, ck.config


def test_convert_t5x_to_t0x_keeps_params_step_and_config(tmp_path):
    dst = tmp_path / "t0x_ckpt"
    summary = convert.convert(LEGACY, dst, "t5x", "t0x")
    assert summary["step"] == 0 and summary["num_params"] == 518240
    assert convert.detect_format(dst) == "t0x"
    assert [p.name for p in dst.iterdir()] == ["0"]
    want = _flat(t5x_checkpoint.read_t5x_params(LEGACY))
    got = _flat(checkpoints.restore_params(dst))
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    params, cfg = _load(dst)
    from t0x.models.t5 import network

    assert cfg == network.CONFIGS["t5_1_1_tiny"]
    meta = checkpoints.read_meta(dst / "0")
    assert meta["step"] == 0 and meta["source"]["format"] == "t5x"
    assert network.T5Config(**meta["config"]) == cfg


def test_convert_refuses_to_overwrite(tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "precious.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=rf"{dst}.*overwrite=True"):
        convert.convert(LEGACY, dst, "t5x", "t0x")
    assert [p.name for p in dst.iterdir()] == ["precious.txt"]
    convert.convert(LEGACY, dst, "t5x", "t0x", overwrite=True)
    assert convert.detect_format(dst) == "t0x"
    assert not (dst / "precious.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp dirs left
    with pytest.raises(convert.ConvertError, match="overlaps the source"):
        convert.convert(dst, dst / "0" / "x", "t0x", "t0x", overwrite=True)


def test_convert_checks_a_given_config(tmp_path):
    from t0x.models.t5 import network

    with pytest.raises(convert.ConvertError, match="emb_dim=512 but the checkpoint has 8"):
        convert.convert(LEGACY, tmp_path / "x", "t5x", "t0x", config="t5_1_1_small")
    cfg = dataclasses.replace(network.CONFIGS["t5_1_1_tiny"], dropout_rate=0.1)
    convert.convert(LEGACY, tmp_path / "y", "t5x", "t0x", config=cfg)
    assert _load(tmp_path / "y")[1].dropout_rate == 0.1
    with pytest.raises(convert.ConvertError, match="--to 'pt'"):
        convert.convert(LEGACY, tmp_path / "z", "t5x", "pt")
    with pytest.raises(convert.ConvertError, match="pass config"):
        convert.convert(TS_DIR, tmp_path / "z", "t5x", "t0x")


@pytest.mark.skipif(not HAVE_HF, reason="t0x/hf.py (save_hf/load_hf) not written yet")
def test_convert_t5x_to_hf_and_back(tmp_path):
    hf_dir = tmp_path / "hf"
    convert.convert(LEGACY, hf_dir, "t5x", "hf")
    assert convert.detect_format(hf_dir) == "hf"
    with pytest.raises(FileExistsError, match="overwrite"):
        convert.convert(LEGACY, hf_dir, "t5x", "hf")
    params, cfg = _load(hf_dir)
    want = _flat(t5x_checkpoint.read_t5x_params(LEGACY))
    got = _flat(params)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k], np.float32), want[k], err_msg=k)
    convert.convert(hf_dir, tmp_path / "t0x", "hf", "t0x")
    assert _load(tmp_path / "t0x")[1] == cfg
