"""The HF <-> ours mapping of fused parameters: each HF tensor is one part of a fused kernel, and back."""

import numpy as np
import pytest

from common.checkpoint.hf_mapping import expected_entries, hf_shape, part_shape, take_part, to_hf, to_ours
from common.config import get_preset


def test_qkv_parts_follow_hf_head_order():
    """Query head j of HF's q_proj is fused head (j // G, j % G): the kv head it attends with."""
    d, K, G, h = 6, 2, 3, 4
    rs = np.random.RandomState(0)
    q, k, v = rs.randn(K * G * h, d), rs.randn(K * h, d), rs.randn(K * h, d)
    fused_shape = (d, K, G + 2, h)
    parts = [to_ours(w, "transpose", part_shape(fused_shape, p)) for w, p in ((q, "q"), (k, "k"), (v, "v"))]
    fused = np.concatenate(parts, axis=-2)
    assert fused.shape == fused_shape
    for j in range(K * G):
        np.testing.assert_array_equal(fused[:, j // G, j % G], q[j * h:(j + 1) * h].T)
    for kv in range(K):
        np.testing.assert_array_equal(fused[:, kv, G], k[kv * h:(kv + 1) * h].T)
        np.testing.assert_array_equal(fused[:, kv, G + 1], v[kv * h:(kv + 1) * h].T)
    for w, p in ((q, "q"), (k, "k"), (v, "v")):
        np.testing.assert_array_equal(to_hf(take_part(fused, p), "transpose"), w)
        assert hf_shape(part_shape(fused_shape, p), "transpose") == w.shape


def test_gate_up_and_bias_parts_round_trip():
    rs = np.random.RandomState(1)
    gate, up = rs.randn(10, 6), rs.randn(10, 6)  # HF [F, d]
    fused = np.concatenate([to_ours(w, "transpose", part_shape((6, 2, 10), p)) for w, p in ((gate, "gate"), (up, "up"))],
                           axis=-2)
    np.testing.assert_array_equal(fused[:, 0], gate.T)
    np.testing.assert_array_equal(to_hf(take_part(fused, "up"), "transpose"), up)
    bias = rs.randn(2 * 3 * 4)
    part = to_ours(bias, "bias", part_shape((2, 5, 4), "q"))
    assert part.shape == (2, 3, 4)
    np.testing.assert_array_equal(to_hf(part, "bias"), bias)


def test_unknown_part_is_named():
    with pytest.raises(KeyError, match="unknown part 'w'"):
        part_shape((4, 3, 2), "w")


def test_every_fused_parameter_has_all_its_parts():
    entries = expected_entries(get_preset("qwen2_5_0_5b"))
    parts, positions = {}, {}
    for position, (ours, _, _, part) in enumerate(entries):
        parts.setdefault(ours, []).append(part)
        positions.setdefault(ours, []).append(position)
    for ours, at in positions.items():  # export gathers a fused parameter once for its consecutive parts
        assert at == list(range(at[0], at[0] + len(at))), ours
    assert parts["layers.0.attn.qkv_kernel"] == ["q", "k", "v"]
    assert parts["layers.0.attn.qkv_bias"] == ["q", "k", "v"]
    assert parts["layers.0.mlp.gate_up_kernel"] == ["gate", "up"]
    assert parts["layers.0.attn.o_kernel"] == [None]
