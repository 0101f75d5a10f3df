"""Sharded equals unsharded on 8 fake CPU devices (tests/conftest.py sets the device count)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from common.checkpoint.hf_import import load_hf_decoder
from common.sampler import Sampler
from common.sharding import logical_to_spec, make_mesh
from tests.common.hf_reference import make_hf_model, rel_err

MESHES = [{"fsdp": 8}, {"fsdp": 4, "tensor": 2}, {"data": 2, "fsdp": 2, "tensor": 2}]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    assert jax.device_count() >= 8, "tests/conftest.py must give 8 fake CPU devices"
    d = tmp_path_factory.mktemp("qwen2")
    make_hf_model("qwen2-gqa2-tied-1e6", d, weight_std=0.3)
    model = load_hf_decoder(d)
    ids = np.random.RandomState(0).randint(0, 256, (8, 16))
    prompts = [np.random.RandomState(i).randint(1, 256, 3 + i).tolist() for i in range(8)]
    tokens = Sampler(model, max_cache_length=64).sample(prompts, max_new_tokens=20).token_ids
    return d, ids, np.asarray(model(ids)), prompts, tokens


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_sharded_equals_unsharded(shape, reference):
    d, ids, ref_logits, prompts, ref_tokens = reference
    mesh = make_mesh(shape, jax.devices()[:8])
    model = load_hf_decoder(d, mesh=mesh)
    q = model.layers.attn.qkv_kernel[...]
    assert len(q.sharding.device_set) == 8 and q.sharding.spec == logical_to_spec(
        ("layers", "embed", "kv_heads", None, "head_dim"), q.shape, mesh)
    with jax.set_mesh(mesh):
        logits = jax.jit(lambda x: model(x))(ids)
    assert rel_err(logits, ref_logits) <= 1e-5
    tokens = Sampler(model, mesh=mesh, max_cache_length=64).sample(prompts, max_new_tokens=20).token_ids
    assert tokens == ref_tokens


def test_rules_drop_axes_that_do_not_divide():
    mesh = make_mesh({"fsdp": 4, "tensor": 2}, jax.devices()[:8])
    # SmolLM2's 9 heads cannot split over tensor=2: replicated on that axis, embed still on fsdp.
    assert logical_to_spec(("embed", "heads", "head_dim"), (576, 9, 64), mesh) == P("fsdp", None, None)
    assert logical_to_spec(("embed", "heads", "head_dim"), (576, 8, 64), mesh) == P("fsdp", "tensor", None)
    assert logical_to_spec(("batch", "length"), (1, 7), mesh) == P(None, None)
    with pytest.raises(KeyError, match="no rule"):
        logical_to_spec(("not_an_axis",), (4,), mesh)


def test_make_mesh_errors():
    with pytest.raises(KeyError, match="unknown mesh axis"):
        make_mesh({"model": 2})
    with pytest.raises(ValueError, match="needs 6 devices"):
        make_mesh({"fsdp": 3, "tensor": 2}, jax.devices()[:8])
