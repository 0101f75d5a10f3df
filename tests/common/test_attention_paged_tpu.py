"""The TPU backend's decode attention over the engine's paged cache: the Pallas paged-attention kernel (in the
TPU interpreter on CPU) equals the XLA reference `paged_reference_attention` on ragged rows, page boundaries,
grouped-query heads, rows sharing prefix pages, a padding row and a non-zero layer of a multi-layer pool, alone
and in shard_map over a mesh; prefill chunks and shapes the kernel does not take run the reference (the
latter with a warning); the engine decodes through it as through the xla backend; and the kernel compiles for
a v5p slice at Qwen2.5-7B's decode shape through libtpu."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.attention import SplashAttention, select_backend
from common.attention.paged import paged_reference_attention
from common.attention.paged_tpu import (decode_lengths, kernel_unsuited, paged_decode_attention,
                                        pages_per_compute_block, warn_fallback)
from common.paged_kv import NULL_PAGE, PageView, flat_pool, layer_page_table
from common.sharding import make_mesh
from tests.common.tpu_compile import run_tpu_compile

PAGE, H_DIM, LAYERS, N = 8, 128, 3, 24
# Rows: one token, exactly a full page, one past a page boundary, several pages, a padding row, and a row that
# shares row 3's first two pages (a shared prompt) then goes on in its own.
LENGTHS = [1, PAGE, PAGE + 1, 3 * PAGE + 5, 0, 2 * PAGE + 3]
TABLE = [[5], [9], [2, 14], [7, 1, 20, 11], [], [7, 1, 17]]
WIDTH = 4  # pages in the call's table (a power of two, as the engine's)


def _pool(K: int, dtype, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """k, v pools [K, LAYERS, N, PAGE, H_DIM] of values exact in bfloat16 (the kernel loads keys and values as
    bfloat16), in `dtype`."""
    rng = np.random.default_rng(seed)
    k, v = (jnp.asarray(rng.standard_normal((K, LAYERS, N, PAGE, H_DIM)), jnp.bfloat16).astype(dtype)
            for _ in range(2))
    return k, v


def _view(lengths=LENGTHS, table=TABLE) -> PageView:
    """A decode step: each row's one query at position length - 1 (padding rows: position 0, length 0)."""
    page_table = np.full((len(lengths), WIDTH), NULL_PAGE, np.int32)
    for b, pages in enumerate(table):
        page_table[b, :len(pages)] = pages
    lengths = np.asarray(lengths, np.int32)
    return PageView(page_table=jnp.asarray(page_table), positions=jnp.asarray(np.maximum(lengths - 1, 0)[:, None]),
                    lengths=jnp.asarray(lengths))


def _q(B: int, H: int, dtype, seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal((B, 1, H, H_DIM)), dtype)


def _float32(*arrays):
    return tuple(x.astype(jnp.float32) for x in arrays)


def _runs_kernel(f, *args) -> bool:
    return "pallas_call" in str(jax.make_jaxpr(f)(*args))


def test_pages_per_compute_block_divides_the_table():
    assert pages_per_compute_block(64, 16) == 8 and pages_per_compute_block(4, 16) == 4
    assert pages_per_compute_block(1, 16) == 1 and pages_per_compute_block(8, 256) == 1
    assert pages_per_compute_block(6, 32) == 3  # not a power of two: the largest divisor that fits


@pytest.mark.parametrize("K, G", [(2, 2), (1, 4)])  # GQA: H = 2K, and 4 query heads on one kv head
def test_kernel_equals_the_reference_in_float32(K, G):
    """Float32 throughout (pool values exact in bfloat16, see `_pool`): equal to 1e-5 on every real row; the
    padding row is 0, not NaN. The layer is traced, as in the decoder's scan."""
    k_pool, v_pool = _pool(K, jnp.float32)
    view, q = _view(), _q(len(LENGTHS), K * G, jnp.float32)

    @jax.jit
    def kernel(q, k_pool, v_pool, layer, view):
        table = layer_page_table(view.page_table, layer, N)
        return paged_decode_attention(q[:, 0], flat_pool(k_pool), flat_pool(v_pool), decode_lengths(view), table,
                                      interpret=True)[:, None]

    out = np.asarray(kernel(q, k_pool, v_pool, jnp.int32(2), view))
    ref = np.asarray(paged_reference_attention(q, k_pool, v_pool, 2, view))
    real = np.asarray(LENGTHS) > 0
    np.testing.assert_allclose(out[real], ref[real], atol=1e-5, rtol=1e-5)
    assert np.all(out[~real] == 0)
    other_layer = np.asarray(paged_reference_attention(q, k_pool, v_pool, 1, view))
    assert np.abs(other_layer[real] - out[real]).max() > 0.1  # the layer index matters


def test_padding_rows_first_last_and_between_leave_the_others_exact():
    """The kernel skips rows of length 0 when it prefetches the next block: padding at either end and between
    real rows."""
    lengths, table = [0, 3, 0, 0, 2 * PAGE + 1, 0], [[], [4], [], [], [6, 3, 8], []]
    k_pool, v_pool = _pool(2, jnp.float32, seed=3)
    view, q = _view(lengths, table), _q(len(lengths), 4, jnp.float32, seed=4)
    out = np.asarray(paged_decode_attention(q[:, 0], flat_pool(k_pool), flat_pool(v_pool), decode_lengths(view),
                                            layer_page_table(view.page_table, 0, N), interpret=True))
    ref = np.asarray(paged_reference_attention(q, k_pool, v_pool, 0, view))[:, 0]
    np.testing.assert_allclose(out[[1, 4]], ref[[1, 4]], atol=1e-5, rtol=1e-5)
    assert np.all(out[[0, 2, 3, 5]] == 0)


def test_the_backend_runs_the_kernel_for_a_bfloat16_decode_step_in_the_layer_scan():
    """SplashAttention.attend_paged in a scan over layers (as `Decoder.forward_paged`): the kernel, equal to the
    reference on the same values in float32 up to the output's rounding to bfloat16 (the reference itself does
    not run in bfloat16 on CPU: XLA's CPU dot takes no bfloat16 x bfloat16 -> float32)."""
    backend = SplashAttention(interpret=True)
    k_pool, v_pool = _pool(2, jnp.bfloat16)
    view, q = _view(), _q(len(LENGTHS), 4, jnp.bfloat16)

    def over_layers(attend, q, k_pool, v_pool, view):
        step = lambda carry, layer: (carry, attend(q, k_pool, v_pool, layer, view))  # noqa: E731
        return jax.lax.scan(step, 0, jnp.arange(LAYERS, dtype=jnp.int32))[1]  # [L, B, 1, H, h]

    assert _runs_kernel(lambda *a: over_layers(backend.attend_paged, *a), q, k_pool, v_pool, view)
    out = np.asarray(jax.jit(lambda *a: over_layers(backend.attend_paged, *a))(q, k_pool, v_pool, view), np.float32)
    ref = np.asarray(over_layers(paged_reference_attention, *_float32(q, k_pool, v_pool), view))
    real = np.asarray(LENGTHS) > 0
    np.testing.assert_allclose(out[:, real], ref[:, real], atol=2e-2, rtol=1e-2)
    assert np.isfinite(out).all()


def test_kernel_in_shard_map_over_rows_and_kv_heads():
    mesh = make_mesh({"fsdp": 2, "tensor": 2}, jax.devices()[:4])
    backend = select_backend(SplashAttention(mesh, interpret=True), mesh=mesh)
    lengths, table = LENGTHS[:4], TABLE[:4]  # 4 rows: 2 a shard
    k_pool, v_pool = _pool(2, jnp.bfloat16)
    view, q = _view(lengths, table), _q(4, 8, jnp.bfloat16)  # 2 kv heads, 4 query heads each: one kv head a shard
    jaxpr = str(jax.make_jaxpr(backend.attend_paged)(q, k_pool, v_pool, 1, view))
    assert "shard_map" in jaxpr and "pallas_call" in jaxpr
    out = np.asarray(jax.jit(backend.attend_paged)(q, k_pool, v_pool, 1, view), np.float32)
    ref = np.asarray(paged_reference_attention(*_float32(q, k_pool, v_pool), 1, view))
    np.testing.assert_allclose(out, ref, atol=2e-2, rtol=1e-2)


def test_prefill_chunks_and_unsuited_shapes_run_the_reference():
    backend = SplashAttention(interpret=True)
    view = _view()
    k_pool, v_pool = _pool(2, jnp.bfloat16)
    chunk = PageView(page_table=view.page_table, positions=view.positions + jnp.arange(-2, 1)[None],
                     lengths=view.lengths)
    q3 = jnp.concatenate([_q(len(LENGTHS), 4, jnp.bfloat16)] * 3, axis=1)
    warn_fallback.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prefill chunk falls back without a warning
        assert str(jax.make_jaxpr(backend.attend_paged)(q3, k_pool, v_pool, 0, chunk)) == \
            str(jax.make_jaxpr(paged_reference_attention)(q3, k_pool, v_pool, 0, chunk))
    f32 = tuple(x.astype(jnp.float32) for x in (k_pool, v_pool))
    narrow = tuple(x[..., :64] for x in (k_pool, v_pool))
    for q, pools, reason in [(_q(6, 4, jnp.float32), f32, "rounds keys and values to bfloat16"),
                             (_q(6, 4, jnp.bfloat16)[..., :64], narrow, "head_dim 64 is not a multiple of 128")]:
        assert reason in kernel_unsuited(q, pools[0])
        with pytest.warns(UserWarning, match=reason):
            assert not _runs_kernel(backend.attend_paged, q, *pools, 0, view)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once a process per reason
            jax.make_jaxpr(backend.attend_paged)(q, *pools, 0, view)


# ---- the engine end to end -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [None, {"data": 2, "fsdp": 2}], ids=["one-device", "per-shard-pools"])
def test_the_engine_decodes_through_the_kernel_as_through_the_xla_backend(monkeypatch, shape):
    """Greedy generation on a tiny random model with head_dim 128: the engine with the TPU backend (its decode
    steps in the kernel, in the interpreter) yields the xla backend's tokens, and log-probs within the kernel's
    bfloat16 loads of keys and values. Float32, as CPU runs no bfloat16 reference: the backend's bfloat16-only
    rule is lifted for the test (the kernel then rounds the float32 keys and values as it loads them). On a
    mesh of 4 batch shards (each its own pool, the engine's step in shard_map over data x fsdp) the kernel runs
    in a shard_map of its own over tensor inside the engine's. The TPU engine decodes 4 steps a round trip (its
    default on an accelerator: each step's tokens fed to the next on the device), the xla one a step."""
    import dataclasses

    from flax import nnx

    from common.attention import paged_tpu
    from common.config import get_preset
    from common.engine import Engine
    from common.model import Decoder

    monkeypatch.setattr(paged_tpu, "kernel_unsuited", lambda q, k_pool: None)
    config = dataclasses.replace(get_preset("tiny"), head_dim=128)
    prompts = [[5, 9, 13], [7, 1, 4, 4, 30, 2] * 3, [100], list(range(40, 60)), [8, 8], [3] * 9]  # 6 > 4 slots
    from common.sharding import make_mesh

    mesh = shape and make_mesh(shape, jax.devices()[:math.prod(shape.values())])
    outs = {}
    for name, backend in [("xla", "xla"), ("tpu", SplashAttention(mesh=mesh, interpret=True))]:
        model = Decoder(config, rngs=nnx.Rngs(3), attention=backend)
        engine = Engine(model, mesh=mesh, max_slots=4 * (mesh.size if mesh else 1), page_size=16,
                        num_pages=32, max_cache_length=64, min_rows=4, decode_steps=4 if name == "tpu" else 1)
        if name == "tpu" and mesh is None:
            step = (jnp.zeros((4, 1), jnp.int32), engine._pool(),
                    PageView(jnp.zeros((4, 2), jnp.int32), jnp.zeros((4, 1), jnp.int32), jnp.ones(4, jnp.int32)))
            assert _runs_kernel(lambda t, kv, v: model.forward_paged(t, kv, v), *step)
        outs[name] = engine.generate(nnx.state(model), prompts, max_new_tokens=12)
    assert outs["tpu"].token_ids == outs["xla"].token_ids
    for a, b in zip(outs["tpu"].logprobs, outs["xla"].logprobs):
        np.testing.assert_allclose(a, b, atol=5e-3)


# ---- a real compile for a TPU slice -------------------------------------------------------------------------

AOT_SCRIPT = """
import json, time
from common.aot.topology import prepare_libtpu_env
prepare_libtpu_env()
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from common.aot.topology import tpu_devices
from common.attention import SplashAttention
from common.paged_kv import PAGE_AXES, PageView
from common.sharding import logical_to_spec, make_mesh

devices = tpu_devices("v5p:2x2x1", "megacore")
mesh = make_mesh({"fsdp": 2, "tensor": 2}, devices)
B, H, K, h, page, P_ROW, L = 64, 28, 4, 128, 16, 64, 28  # Qwen2.5-7B: 64 rows of up to 64 pages of 16
N = 1 + B * P_ROW
shard = lambda axes, shape: NamedSharding(mesh, logical_to_spec(axes, shape, mesh))
q = jax.ShapeDtypeStruct((B, 1, H, h), jnp.bfloat16, sharding=shard(("batch", None, "act_heads", None), (B, 1, H, h)))
pool_shape = (K, L, N, page, h)
ONE_POOL = PAGE_AXES[:2] + (None, None, None)  # one pool: every batch shard holds all pages
pool = jax.ShapeDtypeStruct(pool_shape, jnp.bfloat16, sharding=shard(ONE_POOL, pool_shape))
rows = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=shard(("batch",) + (None,) * (len(shape) - 1), shape))
view = PageView(page_table=rows(B, P_ROW), positions=rows(B, 1), lengths=rows(B))
backend = SplashAttention(mesh)

def decode(q, k_pool, v_pool, view):  # every layer's attention, the layer traced as in the decoder's scan
    return jax.lax.scan(lambda c, l: (c + backend.attend_paged(q, k_pool, v_pool, l, view).astype(jnp.float32), None),
                        jnp.zeros(q.shape, jnp.float32), jnp.arange(L, dtype=jnp.int32))[0]

t = time.perf_counter()
compiled = jax.jit(decode).lower(q, pool, pool, view).compile()
hlo = compiled.as_text()
print("REPORT " + json.dumps({"device_kind": devices[0].device_kind, "seconds": time.perf_counter() - t,
                              "kernels": hlo.count("tpu_custom_call"), "all_gathers": hlo.count("all-gather"),
                              "temp_bytes": compiled.memory_analysis().temp_size_in_bytes}), flush=True)
"""


def test_paged_kernel_compiles_for_a_v5p_slice_at_a_7b_decode_shape():
    """Qwen2.5-7B (4 kv heads, 28 query heads, head_dim 128) decoding 64 rows of up to 64 pages of 16 tokens,
    bfloat16, over all 28 layers of the pool in a scan, on 4 v5p chips (rows over fsdp, kv heads over tensor):
    one kernel in the program, the pool never gathered (each device reads its kv heads' pages in place) and no
    copy of a layer's slice (its pages are read from the one pool by index). It compiles in about a second."""
    r = run_tpu_compile(["-c", AOT_SCRIPT])
    assert r["device_kind"].startswith("TPU v5")
    assert r["kernels"] >= 1 and r["all_gathers"] == 0
    layer_pages_a_device = 4 // 2 * (1 + 64 * 64) * 16 * 128 * 2  # 16 MiB: kv heads over tensor = 2
    assert r["temp_bytes"] < layer_pages_a_device / 4
    assert r["seconds"] < 60
