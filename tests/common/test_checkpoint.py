"""HF import/export and our orbax checkpoint: round trips and the clear errors."""

import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from transformers import AutoModelForCausalLM

from common.checkpoint.hf_export import save_hf
from common.checkpoint.hf_import import (MissingTensorError, ShapeMismatchError, UnexpectedTensorError,
                                         load_hf_decoder)
from common.checkpoint.orbax_io import load_checkpoint, read_metadata, save_checkpoint
from common.checkpoint.safetensors_io import CorruptCheckpointError, SafetensorsFile, write_safetensors
from common.config import UnknownArchitectureError
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
