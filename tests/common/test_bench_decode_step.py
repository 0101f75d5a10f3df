"""tools/bench_decode_step.py: its three ways are the programs they say, and they decode the same tokens."""

import numpy as np
import pytest
from flax import nnx

from common.config import get_preset
from common.kernels import cpu_build
from common.model import Decoder
from tools.bench_decode_step import WAYS, step_programs

pytestmark = pytest.mark.skipif(not cpu_build.available(), reason="no C++ compiler or CPU support: kernels off")


def test_three_ways_decode_the_same_tokens():
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(0))
    programs = step_programs(model, batch=2, steps=5, prompt_len=6)
    assert sorted(programs) == sorted(WAYS)
    tokens = {way: run() for way, run in programs.items()}
    assert tokens["layer"].shape == (2, 1)
    for way in WAYS:
        np.testing.assert_array_equal(tokens[way], tokens["layer"], err_msg=way)
