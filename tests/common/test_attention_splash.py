"""The TPU splash backend: its kernel (in Pallas's interpreter on CPU) equals the dense reference in values and
gradients with grouped-query heads and left padding, alone and in shard_map over a mesh; the calls the kernel
cannot express fall back to the XLA paths; and the kernel compiles for a real TPU slice (v5p 2x2x1) through
libtpu, in a clean process."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.attention import SplashAttention, Visibility, XlaAttention, select_backend
from common.sharding import make_mesh
from tests.common.test_attention_blockwise import _inputs, assert_matches_reference
from tests.common.tpu_compile import run_tpu_compile

T = 200  # not a multiple of the 128-slot tiles: padded to 256, 2 x 2 tiles, the one above the diagonal skipped


def _causal(start, T=T):
    return Visibility(query_slots=jnp.arange(T, dtype=jnp.int32), start=jnp.asarray(start, jnp.int32), prefix=None,
                      key_length=T)


def _runs_kernel(attend, *args) -> bool:
    return "pallas_call" in str(jax.make_jaxpr(attend)(*args))


@pytest.mark.parametrize("heads", [(4, 2), (4, 4)])  # GQA, MHA
def test_kernel_equals_the_reference_in_interpret_mode(heads):
    q, k, v, cotangent = _inputs(T, T, *heads, h=16)
    vis = _causal([0, 37, 199])  # whole, left-padded, one token
    backend = SplashAttention(block_q=128, block_k=128, interpret=True)
    assert _runs_kernel(backend.attend, q, k, v, vis) and _runs_kernel(backend.attend_cached, q, k, v, vis)
    assert_matches_reference(backend.attend, q, k, v, cotangent, vis)


def test_kernel_in_shard_map_over_rows_and_heads():
    mesh = make_mesh({"fsdp": 2, "tensor": 2}, jax.devices()[:4])
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.standard_normal((4, 130, 4, 16)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((4, 130, 2, 16)), jnp.float32) for _ in range(2))
    vis = _causal([0, 11, 129, 3], T=130)
    backend = select_backend(SplashAttention(mesh, 128, 128, interpret=True), mesh=mesh)
    jaxpr = str(jax.make_jaxpr(backend.attend)(q, k, v, vis))
    assert "shard_map" in jaxpr and "pallas_call" in jaxpr
    assert_matches_reference(backend.attend, q, k, v, jnp.ones_like(q), vis)


def test_calls_the_kernel_cannot_express_fall_back():
    backend = SplashAttention(block_q=128, block_k=128, interpret=True)
    q, k, v, cotangent = _inputs(5, 19, 4, 2)
    cached = Visibility(query_slots=11 + jnp.arange(5, dtype=jnp.int32), start=jnp.asarray([2, 0, 9]), prefix=None,
                        key_length=19)
    prefixed = Visibility(query_slots=jnp.arange(19, dtype=jnp.int32), start=jnp.asarray([4, 0, 6]),
                          prefix=jnp.asarray([2, 0, 3]), key_length=19)
    qs, _, _, cot = _inputs(19, 19, 4, 2)
    for args in ((q, k, v, cached), (qs, k, v, prefixed)):  # S > T; a shared prefix: blockwise
        assert not _runs_kernel(backend.attend_cached, *args) and "scan" in str(jax.make_jaxpr(backend.attend)(*args))
    assert_matches_reference(backend.attend, q, k, v, cotangent, cached)
    assert_matches_reference(backend.attend, qs, k, v, cot, prefixed)
    step = Visibility(query_slots=jnp.asarray([15]), start=jnp.asarray([2, 0, 9]), prefix=None, key_length=19)
    decode = (q[:, :1], k, v, step)  # a decode step: the dense product, as the XLA backend runs it
    assert str(jax.make_jaxpr(backend.attend_cached)(*decode)) == \
        str(jax.make_jaxpr(XlaAttention().attend_cached)(*decode))


def test_auto_picks_splash_on_tpu_with_the_mesh():
    mesh = make_mesh({"fsdp": 2}, jax.devices()[:2])
    assert select_backend("auto", mesh=mesh, platform="tpu") == SplashAttention(mesh)
    assert select_backend("splash", mesh=mesh) == SplashAttention(mesh) != SplashAttention()
    assert SplashAttention.suits("tpu", None) and not SplashAttention.suits("cpu", None)
    with pytest.raises(ValueError, match="select it with that mesh"):
        SplashAttention().check_mesh(mesh)


# ---- a real compile for a TPU slice -------------------------------------------------------------------------

AOT_SCRIPT = """
import json, time
from common.aot.topology import prepare_libtpu_env
prepare_libtpu_env()
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from common.aot.topology import tpu_devices
from common.attention import SplashAttention, Visibility
from common.sharding import make_mesh

devices = tpu_devices("v5p:2x2x1", "megacore")
mesh = make_mesh({"fsdp": 2, "tensor": 2}, devices)
B, T, H, K, h = 4, 2048, 8, 2, 64
heads = NamedSharding(mesh, P("fsdp", None, "tensor", None))
q = jax.ShapeDtypeStruct((B, T, H, h), jnp.bfloat16, sharding=heads)
kv = jax.ShapeDtypeStruct((B, T, K, h), jnp.bfloat16, sharding=heads)
start = jax.ShapeDtypeStruct((B,), jnp.int32, sharding=NamedSharding(mesh, P("fsdp")))
backend = SplashAttention(mesh)
attend = lambda q, k, v, start: backend.attend(q, k, v, Visibility(jnp.arange(T, dtype=jnp.int32), start, None, T))
report = {"device_kind": devices[0].device_kind, "num_devices": len(devices)}
for name, f in [("forward", attend),
                ("grad", jax.grad(lambda *a: attend(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2)))]:
    t = time.perf_counter()
    compiled = jax.jit(f).lower(q, kv, kv, start).compile()
    report[name] = {"seconds": time.perf_counter() - t, "kernels": compiled.as_text().count("tpu_custom_call"),
                    "temp_bytes": compiled.memory_analysis().temp_size_in_bytes}
print("REPORT " + json.dumps(report), flush=True)
"""


@pytest.fixture(scope="module")
def splash_tpu_compile():
    return run_tpu_compile(["-c", AOT_SCRIPT])


def test_splash_compiles_for_a_v5p_slice_in_shard_map(splash_tpu_compile):
    """Rows over fsdp, heads over tensor on 4 v5p chips; the forward is one kernel, the gradient three (the
    forward, then dq and dk/dv). The float32 scores of a device's share would be 2 x 4 x 2048^2 x 4 = 128 MiB."""
    r = splash_tpu_compile
    assert r["device_kind"].startswith("TPU v5") and r["num_devices"] == 4
    assert r["forward"]["kernels"] >= 1 and r["grad"]["kernels"] >= 3
    assert r["grad"]["temp_bytes"] < 2 * 4 * 2048 * 2048 * 4 / 2
    assert r["forward"]["seconds"] < 60 and r["grad"]["seconds"] < 120
