"""HF checkpoint -> our checkpoint, streamed (common/checkpoint/hf_to_orbax.py, tools/convert_hf_to_orbax.py):
the same parameters and logits as the direct HF import, onto a mesh too; a killed conversion leaves no
checkpoint; host memory stays at a few chunks, far below the checkpoint's size."""

import subprocess
import sys
import tracemalloc
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from common.checkpoint import hf_to_orbax
from common.checkpoint.hf_import import load_hf_decoder
from common.checkpoint.hf_to_orbax import chunk_boxes, chunk_shape, convert_hf_to_orbax, store_url
from common.checkpoint.orbax_io import is_checkpoint_dir, load_checkpoint, read_metadata
from common.sharding import make_mesh
from tests.common.hf_reference import make_hf_model

REPO = Path(__file__).resolve().parents[2]
quiet = lambda *_: None  # noqa: E731


def _params(model):
    return jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_chunks_are_one_layer_deep_small_and_keep_the_parts_axis():
    assert chunk_shape((24, 896, 2, 4864), 2, 2**20, stacked=True) == (1, 448, 2, 304)
    assert chunk_shape((151936, 896), 2, 16 * 2**20) == (4748, 896)
    assert chunk_shape((896,), 4, 2**20) == (896,)
    assert chunk_shape((4, 8, 3, 16), 4, 1, stacked=True) == (1, 1, 3, 1)  # the floor: one element per free axis
    boxes = list(chunk_boxes((5, 4), (2, 3)))
    assert len(boxes) == 6 and boxes[-1] == (slice(4, 5), slice(3, 4))


def test_store_urls():
    assert store_url("gs://bucket/models/x") == "gs://bucket/models/x/"
    assert store_url("/tmp/a/b/") == "file:///tmp/a/b/"


@pytest.mark.parametrize("case", ["qwen2-gqa7-untied-1e6", "llama-gqa2-tied-1e4"])
def test_converted_checkpoint_equals_the_direct_import(case, tmp_path):
    make_hf_model(case, tmp_path / "hf", layers=3)
    summary = convert_hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", chunk_bytes=512, log=quiet)
    assert is_checkpoint_dir(tmp_path / "ckpt") and read_metadata(tmp_path / "ckpt")["param_dtype"] == "float32"
    direct, converted = load_hf_decoder(tmp_path / "hf"), load_checkpoint(tmp_path / "ckpt")
    for a, b in zip(_params(direct), _params(converted), strict=True):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    ids = np.random.RandomState(0).randint(0, 256, (2, 11))
    assert np.array_equal(np.asarray(direct(ids)), np.asarray(converted(ids)))
    assert summary["bytes"] == sum(x.nbytes for x in _params(direct))


def test_workers_restore_their_shards_and_bfloat16_storage(tmp_path):
    make_hf_model("qwen2-gqa2-tied-1e6", tmp_path / "hf")
    convert_hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", dtype="bfloat16", chunk_bytes=1024, log=quiet)
    mesh = make_mesh({"fsdp": 2, "tensor": 2}, jax.devices()[:4])
    sharded = load_checkpoint(tmp_path / "ckpt", mesh=mesh)
    direct = load_hf_decoder(tmp_path / "hf", dtype="float32", param_dtype="bfloat16")
    for a, b in zip(_params(direct), _params(sharded), strict=True):
        assert b.dtype == np.dtype("bfloat16") and np.array_equal(np.asarray(a), np.asarray(b))
    assert any(len(x.sharding.device_set) == 4 and not x.sharding.is_fully_replicated for x in _params(sharded))
    ids = np.random.RandomState(1).randint(0, 256, (2, 9))
    with jax.set_mesh(mesh):
        logits = jax.jit(lambda x: sharded(x))(ids)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(direct(ids)), atol=2e-5)  # sums split over shards


def test_a_killed_conversion_leaves_no_checkpoint_and_a_rerun_completes(tmp_path, monkeypatch):
    make_hf_model("llama-gqa7-untied-1e6", tmp_path / "hf")
    convert_hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", log=quiet)
    real, calls = hf_to_orbax.write_array, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hf_to_orbax, "write_array", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        convert_hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", log=quiet)
    assert not is_checkpoint_dir(tmp_path / "ckpt")  # the old one was withdrawn before anything was rewritten
    monkeypatch.setattr(hf_to_orbax, "write_array", real)
    convert_hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", log=quiet)
    ids = np.arange(12)[None]
    assert np.array_equal(np.asarray(load_checkpoint(tmp_path / "ckpt")(ids)),
                          np.asarray(load_hf_decoder(tmp_path / "hf")(ids)))


def test_host_memory_stays_at_a_few_chunks(tmp_path):
    """Peak host allocations (numpy reports its buffers to tracemalloc) while a 13 MB checkpoint converts in
    chunks of at most 64 KiB: a few chunks, a small share of the checkpoint (the safetensors are memory-mapped:
    their pages are file cache, not allocations)."""
    make_hf_model("qwen2-mha-untied-1e4", tmp_path / "hf", vocab=2048, hidden_per_head=64, layers=4)
    total = sum(f.stat().st_size for f in (tmp_path / "hf").glob("*.safetensors"))
    chunk = 64 * 2**10
    convert_hf_to_orbax(tmp_path / "hf", tmp_path / "warm", chunk_bytes=chunk, log=quiet)  # first-use imports
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        summary = convert_hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", chunk_bytes=chunk, in_flight=4,
                                      log=quiet)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert summary["bytes"] > 8 * 2**20 and total > 8 * 2**20
    assert chunk / 4 <= peak < 20 * chunk < total / 6, (peak, total)


def test_command_converts(tmp_path):
    make_hf_model("llama-gqa2-tied-1e4", tmp_path / "hf")
    out = subprocess.run([sys.executable, str(REPO / "tools" / "convert_hf_to_orbax.py"), "--hf", str(tmp_path / "hf"),
                          "--out", str(tmp_path / "ckpt"), "--chunk-mib", "0.01"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "wrote" in out.stdout and is_checkpoint_dir(tmp_path / "ckpt")
