"""The rules table warns when it drops a mesh axis from a dimension the axis does not divide (issue 18,
item 5): once per (logical axes, shape, mesh), naming all three; planning (`warn=False`) stays quiet."""

import warnings

import jax
import pytest
from jax.sharding import PartitionSpec as P

from common.sharding import ShardingDropWarning, logical_to_spec, make_mesh


@pytest.fixture(scope="module")
def mesh():
    return make_mesh({"data": 2, "fsdp": 4}, jax.devices()[:8])


def test_a_dropped_batch_axis_warns_once_naming_axes_shape_and_mesh_axis(mesh):
    with pytest.warns(ShardingDropWarning) as caught:
        spec = logical_to_spec(("batch", None), (6, 3), mesh)
    assert spec == P("data", None)  # 6 splits over data (2), not over data x fsdp (8)
    (w,) = caught
    text = str(w.message)
    assert "('batch', None)" in text and "(6, 3)" in text and "'fsdp' (4)" in text and "same rows" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second array of the same class: no second warning
        assert logical_to_spec(("batch", None), (6, 3), mesh) == spec
        assert logical_to_spec(("batch", None), (8, 3), mesh) == P(("data", "fsdp"), None)  # divides: quiet
        logical_to_spec(("vocab", "embed"), (25, 64), mesh, warn=False)  # planning: quiet
    with pytest.warns(ShardingDropWarning, match=r"\('vocab', 'embed'\) and shape \(25, 64\)"):
        logical_to_spec(("vocab", "embed"), (25, 64), mesh)  # another class warns
