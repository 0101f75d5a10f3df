"""HF import/export and our orbax checkpoint: round trips and the clear errors."""

import contextlib
import json

import jax
import numpy as np
import pytest
from flax import nnx
from transformers import AutoModelForCausalLM

from common.checkpoint.hf_export import save_hf
from common.checkpoint.hf_import import (MissingTensorError, ShapeMismatchError, UnexpectedTensorError,
                                         load_hf_decoder)
from common.checkpoint.legacy import FORMAT_V1
from common.checkpoint.orbax_io import load_checkpoint, read_metadata, save_checkpoint, save_params
from common.config import ModelConfig
from common.checkpoint.safetensors_io import CorruptCheckpointError, SafetensorsFile, write_safetensors
from common.config import UnknownArchitectureError
from common.sharding import make_mesh
from tests.common.hf_reference import hf_logits, make_hf_model, rel_err


@pytest.fixture
def qwen_dir(tmp_path):
    make_hf_model("qwen2-gqa7-untied-1e6", tmp_path / "hf")
    return tmp_path / "hf"


def _tensors(directory):
    f = SafetensorsFile(directory / "model.safetensors")
    return {n: np.array(f.view(n)) for n in f.names()}


def _rewrite(directory, tensors):
    items = [(n, a.shape, a.dtype, (lambda a=a: a)) for n, a in tensors.items()]
    write_safetensors(directory / "model.safetensors", items)


@pytest.mark.parametrize("case", ["qwen2-gqa7-untied-1e6", "llama-gqa2-tied-1e4"])
def test_hf_export_loads_in_transformers_with_same_logits(case, tmp_path):
    make_hf_model(case, tmp_path / "src")
    model = load_hf_decoder(tmp_path / "src")
    save_hf(model, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = np.random.RandomState(0).randint(0, 256, (2, 11))
    assert rel_err(model(ids), hf_logits(reloaded, ids)) <= 1e-5


def test_hf_export_sharded_index(qwen_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("common.checkpoint.hf_export.MAX_SHARD_BYTES", 20_000)
    model = load_hf_decoder(qwen_dir)
    save_hf(model, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "out").glob("model-*-of-*.safetensors"))) > 1
    again = load_hf_decoder(tmp_path / "out")
    ids = np.arange(10)[None]
    assert np.array_equal(np.asarray(again(ids)), np.asarray(model(ids)))


def test_orbax_round_trip_is_bit_identical(qwen_dir, tmp_path):
    model = load_hf_decoder(qwen_dir, dtype="bfloat16")
    save_checkpoint(tmp_path / "ckpt", model, step=7, source=str(qwen_dir))
    restored = load_checkpoint(tmp_path / "ckpt", dtype="bfloat16")
    a, b = nnx.state(model, nnx.Param), nnx.state(restored, nnx.Param)
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype == np.dtype("bfloat16")
        assert np.array_equal(np.asarray(x).view(np.uint16), np.asarray(y).view(np.uint16))
    meta = read_metadata(tmp_path / "ckpt")
    assert meta["step"] == 7 and meta["source"] == str(qwen_dir)
    assert not list(tmp_path.glob("ckpt.partial-*"))


def test_missing_tensor_is_named(qwen_dir):
    t = _tensors(qwen_dir)
    del t["model.layers.1.mlp.up_proj.weight"]
    _rewrite(qwen_dir, t)
    with pytest.raises(MissingTensorError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf_decoder(qwen_dir)


def test_unexpected_tensor_is_named(qwen_dir):
    t = _tensors(qwen_dir)
    t["model.layers.0.self_attn.extra.weight"] = np.zeros((2, 2), np.float32)
    _rewrite(qwen_dir, t)
    with pytest.raises(UnexpectedTensorError, match=r"self_attn\.extra\.weight"):
        load_hf_decoder(qwen_dir)


def test_shape_mismatch_names_tensor_and_both_shapes(qwen_dir):
    t = _tensors(qwen_dir)
    t["model.layers.0.mlp.down_proj.weight"] = np.zeros((112, 95), np.float32)
    _rewrite(qwen_dir, t)
    with pytest.raises(ShapeMismatchError, match=r"down_proj\.weight.*\(112, 95\).*\(112, 96\)"):
        load_hf_decoder(qwen_dir)


def test_unknown_architecture(qwen_dir):
    cfg = json.loads((qwen_dir / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "gpt_neox", ["GPTNeoXForCausalLM"]
    (qwen_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnknownArchitectureError, match="gpt_neox"):
        load_hf_decoder(qwen_dir)


def test_truncated_file(qwen_dir):
    path = qwen_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_hf_decoder(qwen_dir)


def test_corrupt_header(qwen_dir):
    path = qwen_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json at!"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="malformed JSON header"):
        load_hf_decoder(qwen_dir)


def test_missing_directory_contents(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "vocab_size": 8, "hidden_size": 8,
                                                      "intermediate_size": 8, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2}))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_hf_decoder(tmp_path)


def _first_layout_params(hf_dir):
    """A checkpoint's parameters in the first layout (format v1: separate q/k/v and gate/up kernels),
    written out from the HF tensors the way that layout defined them."""
    config = ModelConfig.from_hf_json(hf_dir)
    d, H, K, h = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    t = _tensors(hf_dir)
    layers = {}
    for i in range(config.num_layers):
        w = lambda name: t[f"model.layers.{i}.{name}"]
        attn = {"q_kernel": w("self_attn.q_proj.weight").T.reshape(d, H, h),
                "k_kernel": w("self_attn.k_proj.weight").T.reshape(d, K, h),
                "v_kernel": w("self_attn.v_proj.weight").T.reshape(d, K, h),
                "o_kernel": w("self_attn.o_proj.weight").T.reshape(H, h, d),
                "q_bias": w("self_attn.q_proj.bias").reshape(H, h),
                "k_bias": w("self_attn.k_proj.bias").reshape(K, h),
                "v_bias": w("self_attn.v_proj.bias").reshape(K, h)}
        mlp = {"gate_kernel": w("mlp.gate_proj.weight").T, "up_kernel": w("mlp.up_proj.weight").T,
               "down_kernel": w("mlp.down_proj.weight").T}
        layers[i] = {"attn": attn, "mlp": mlp, "attn_norm": w("input_layernorm.weight"),
                     "mlp_norm": w("post_attention_layernorm.weight")}
    params = {"embedding": t["model.embed_tokens.weight"], "final_norm": t["model.norm.weight"],
              "lm_head": t["lm_head.weight"].T, "layers": layers}
    return config, jax.tree.map(np.ascontiguousarray, params)


def _write_first_layout_checkpoint(hf_dir, directory, fmt=FORMAT_V1):
    config, params = _first_layout_params(hf_dir)
    save_params(directory / "params", params)
    (directory / "model_config.json").write_text(config.to_json())
    (directory / "metadata.json").write_text(json.dumps({"format": fmt, "step": 3, "param_dtype": "float32"}))


@pytest.mark.parametrize("mesh_shape", [None, {"fsdp": 2, "tensor": 2}], ids=["one-device", "fsdp2-tensor2"])
def test_first_layout_checkpoint_loads_with_the_same_logits(qwen_dir, tmp_path, mesh_shape):
    """Checkpoints written before q/k/v and gate/up were fused still load, onto a mesh too."""
    _write_first_layout_checkpoint(qwen_dir, tmp_path / "v1")
    mesh = None if mesh_shape is None else make_mesh(mesh_shape, jax.devices()[:4])
    model = load_checkpoint(tmp_path / "v1", mesh=mesh)
    ids = np.random.RandomState(0).randint(0, 256, (2, 11))
    ref = hf_logits(AutoModelForCausalLM.from_pretrained(qwen_dir).eval(), ids)
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        logits = jax.jit(lambda x: model(x))(ids)
    assert rel_err(logits, ref) <= 1e-5
    fresh = nnx.to_pure_dict(nnx.state(load_hf_decoder(qwen_dir), nnx.Param))
    loaded = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(loaded)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_unknown_checkpoint_format_is_named(qwen_dir, tmp_path):
    _write_first_layout_checkpoint(qwen_dir, tmp_path / "v9", fmt="qrr-checkpoint-v9")
    with pytest.raises(ValueError, match="unknown checkpoint format 'qrr-checkpoint-v9'"):
        load_checkpoint(tmp_path / "v9")


def test_per_layer_checkpoint_v2_loads_with_its_layers_stacked(qwen_dir, tmp_path):
    """Checkpoints written before the layers' parameters were stacked (format v2: a tree per layer) still load,
    to the same parameters."""
    from common.checkpoint.legacy import FORMAT_V2

    fresh = nnx.to_pure_dict(nnx.state(load_hf_decoder(qwen_dir), nnx.Param))
    config = ModelConfig.from_hf_json(qwen_dir)
    per_layer = dict(fresh, layers={i: jax.tree.map(lambda a, i=i: np.asarray(a[i]), fresh["layers"])
                                    for i in range(config.num_layers)})
    directory = tmp_path / "v2"
    save_params(directory / "params", per_layer)
    (directory / "model_config.json").write_text(config.to_json())
    (directory / "metadata.json").write_text(json.dumps({"format": FORMAT_V2, "step": 3, "param_dtype": "float32"}))
    loaded = nnx.to_pure_dict(nnx.state(load_checkpoint(directory), nnx.Param))
    assert jax.tree.structure(loaded) == jax.tree.structure(fresh)
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(loaded)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
