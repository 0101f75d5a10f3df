"""Blockwise (online-softmax) attention: equal to the dense reference in values and in gradients on causal,
left-padded, shared-prefix and cached calls, with grouped-query heads and lengths that are not a multiple of
the tile; tiles nobody sees are skipped; the compiled gradient holds no [T, S] scores; and `XlaAttention`
goes blockwise above its threshold while a decode step stays the dense product."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.attention.base import Visibility
from common.attention.blockwise import BlockwiseAttention, _tile_seen, blockwise_attention
from common.attention.xla import XlaAttention, reference_attention

# name -> (T, S, query slots, start [3], prefix [3] or None)
CASES = {
    "causal": (13, 13, np.arange(13), [0, 0, 0], None),
    "left_padded": (13, 13, np.arange(13), [0, 5, 12], None),
    "prefix": (7, 23, 9 + np.arange(7), [0, 6, 4], [0, 3, 4]),  # prefix slots, then padding, then own tokens
    "cached": (5, 19, 11 + np.arange(5), [2, 0, 9], None),  # a chunk of queries after cached slots, S > T
}


def _inputs(T, S, H, K, h=8, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal(shape), dtype) for shape in
                 ((3, T, H, h), (3, S, K, h), (3, S, K, h), (3, T, H, h)))  # q, k, v, a cotangent


def _visibility(T, S, slots, start, prefix):
    return Visibility(query_slots=jnp.asarray(slots, jnp.int32), start=jnp.asarray(start, jnp.int32),
                      prefix=None if prefix is None else jnp.asarray(prefix, jnp.int32), key_length=S)


def assert_matches_reference(attend, q, k, v, cotangent, vis, tol=1e-5):
    """attend(q, k, v, vis) equals `reference_attention` in values and in the gradients of <out, cotangent>
    w.r.t. q, k, v, on every query that sees a slot (a query that sees none is left unspecified)."""
    seen = np.asarray(vis.mask().any(-1))[:, :, None, None]
    weights = cotangent * seen
    ref = reference_attention(q, k, v, vis.mask())
    out = jax.jit(attend)(q, k, v, vis)
    assert out.shape == q.shape and out.dtype == v.dtype
    np.testing.assert_allclose(np.asarray(out) * seen, np.asarray(ref) * seen, atol=tol, rtol=tol)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(reference_attention(*a, vis.mask()) * weights),
                             argnums=(0, 1, 2)))(q, k, v)
    got = jax.jit(jax.grad(lambda *a: jnp.sum(attend(*a, vis) * weights), argnums=(0, 1, 2)))(q, k, v)
    for name, g, r in zip("qkv", got, grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=tol, rtol=tol, err_msg=f"d{name}")


@pytest.mark.parametrize("heads", [(4, 2), (4, 4)])  # GQA, MHA
@pytest.mark.parametrize("case", sorted(CASES))
def test_blockwise_equals_the_reference_in_values_and_gradients(case, heads):
    T, S, slots, start, prefix = CASES[case]
    q, k, v, cotangent = _inputs(T, S, *heads)
    vis = _visibility(T, S, slots, start, prefix)
    # Tiles of 4 queries x 8 slots: neither length is a multiple of them, and several tiles are skipped.
    assert_matches_reference(lambda *a: blockwise_attention(*a, block_q=4, block_k=8), q, k, v, cotangent, vis)


def test_a_query_that_sees_no_slot_gets_zeros_and_passes_no_gradient():
    q, k, v, _ = _inputs(6, 6, 2, 1)
    vis = _visibility(6, 6, np.arange(6), [4, 0, 0], None)  # row 0: slots 0..3 are padding
    out = jax.jit(blockwise_attention, static_argnums=(4, 5))(q, k, v, vis, 2, 2)
    np.testing.assert_array_equal(np.asarray(out[0, :4]), 0)
    dq = jax.jit(jax.grad(lambda q: blockwise_attention(q, k, v, vis, 2, 2)[0, :4].sum()))(q)
    assert np.isfinite(np.asarray(dq)).all() and not np.asarray(dq).any()


def test_tiles_nobody_sees_are_skipped():
    start, prefix = jnp.asarray([0, 4]), jnp.asarray([0, 0])
    queries = jnp.arange(8, 12)  # slots 8..11
    assert _tile_seen(queries, 8, 4, start, prefix)  # the diagonal tile
    assert not _tile_seen(queries, 12, 4, start, prefix)  # above the diagonal
    assert not _tile_seen(queries, 0, 4, jnp.asarray([4, 6]), prefix)  # before every row's start
    assert _tile_seen(queries, 0, 4, jnp.asarray([4, 6]), jnp.asarray([0, 1]))  # unless a row's prefix is there
    assert not _tile_seen(queries, 4, 4, jnp.asarray([9, 9]), jnp.asarray([0, 4]))  # between prefix and start


def test_bfloat16_is_close_to_the_reference():
    q, k, v, _ = _inputs(13, 13, 4, 2, dtype=jnp.bfloat16)
    vis = _visibility(*CASES["left_padded"])
    seen = np.asarray(vis.mask().any(-1))[:, :, None, None]
    out = blockwise_attention(q, k, v, vis, 4, 4)
    assert out.dtype == jnp.bfloat16
    ref = reference_attention(q, k, v, vis.mask(), accumulate_f32=True)
    np.testing.assert_allclose(np.asarray(out, np.float32) * seen, np.asarray(ref, np.float32) * seen,
                               atol=3e-2, rtol=3e-2)


def test_the_gradient_holds_no_score_array():
    """At T = S = 4096 the float32 scores of one layer are 256 MiB (B=1, H=4): the dense gradient's temporaries
    exceed that, the blockwise one's stay a fraction of it (a few tiles)."""
    B, T, H, K, h = 1, 4096, 4, 2, 32
    scores = B * H * T * T * 4
    q = jax.ShapeDtypeStruct((B, T, H, h), jnp.float32)
    kv = jax.ShapeDtypeStruct((B, T, K, h), jnp.float32)
    vis = Visibility(query_slots=jnp.arange(T, dtype=jnp.int32), start=jnp.zeros((B,), jnp.int32),
                     prefix=jnp.zeros((B,), jnp.int32), key_length=T)

    def temp_bytes(attend):
        grad = jax.grad(lambda q, k, v, vis: attend(q, k, v, vis).sum(), argnums=(0, 1, 2))
        return jax.jit(grad).lower(q, kv, kv, vis).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(lambda q, k, v, vis: reference_attention(q, k, v, vis.mask())) > scores
    assert temp_bytes(BlockwiseAttention().attend) < scores / 8


def test_xla_goes_blockwise_above_its_threshold_and_decodes_densely():
    q, k, v, cotangent = _inputs(5, 19, 4, 2)
    vis = _visibility(*CASES["cached"])

    def tiled(attend, *args):
        return "scan" in str(jax.make_jaxpr(attend)(*args))

    assert not tiled(XlaAttention().attend, q, k, v, vis)  # 5 x 19: the dense product
    assert tiled(XlaAttention(blockwise_above=5 * 19 - 1).attend, q, k, v, vis)
    assert tiled(XlaAttention(blockwise_above=5 * 19 - 1).attend_cached, q, k, v, vis)
    assert_matches_reference(XlaAttention(blockwise_above=0, block_q=2, block_k=4).attend, q, k, v, cotangent, vis)
    # A decode step is the dense product as before, whatever the threshold.
    step = _visibility(1, 19, [15], [2, 0, 9], None)
    dense = jax.make_jaxpr(lambda q, k, v, vis: reference_attention(q, k, v, vis.mask(), accumulate_f32=True))
    assert str(jax.make_jaxpr(XlaAttention(blockwise_above=0).attend_cached)(q[:, :1], k, v, step)) == \
        str(dense(q[:, :1], k, v, step))
