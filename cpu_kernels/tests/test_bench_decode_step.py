"""tools/bench_decode_step.py: its three ways are the backends they say, and they decode the same tokens."""

import importlib
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from common.config import get_preset
from common.model import Decoder
from cpu_kernels import build

pytestmark = pytest.mark.skipif(not build.available(), reason="no C++ compiler or CPU support: kernels off")

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))  # as `python tools/bench_decode_step.py` runs it
    return importlib.import_module("bench_decode_step")


def test_three_ways_decode_the_same_tokens(bench):
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(0))
    programs = bench.step_programs(model, batch=2, steps=5, prompt_len=6)
    assert sorted(programs) == ["layer", "per-op", "xla"]
    tokens = {way: run() for way, run in programs.items()}
    assert tokens["layer"].shape == (2, 1)
    for way in programs:
        np.testing.assert_array_equal(tokens[way], tokens["layer"], err_msg=way)
    assert [b.name for b in bench.ways().values()] == ["xla", "cpu", "cpu"]
