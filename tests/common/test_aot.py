"""Ahead-of-time memory planning (common.aot, common/mesh_presets.py, tools/memory_plan.py): mesh presets,
the analytic breakdown against hand counts and the published parameter counts, abstract shardings against
what the trainer really builds, `check_fits`, and a real compile of the tiny model for a TPU v5e 2x2 slice."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from flax import nnx

from common.aot.estimate import JobShape, estimate_memory, param_bytes_per_device
from common.aot.fits import MemoryPlanError, check_fits, rollout_chunk
from common.aot.topology import INSTALL_HINT, libtpu_importable
from common.config import get_preset
from common.config_file import load_config
from common.mesh_presets import PRESETS, RECOMMENDED, SIZES, check_layout, get_mesh_preset, layout
from tests.multiprocess import REPO_ROOT

GiB = 2**30

# Hand count of the tiny preset (V=512, d=64, F=128, L=2, H=4, K=2, h=16, tied, q/k/v biases).
TINY_LAYER = 64 * 4 * 16 * 2 + 64 * 2 * 16 * 2 + (4 + 2 + 2) * 16 + 2 * 64 + 3 * 64 * 128  # 37120
TINY_PARAMS = 2 * TINY_LAYER + 512 * 64 + 64  # 107072
TINY_REPLICATED = 2 * (2 * 64 + (4 + 2 + 2) * 16) + 64  # norms and biases: no dimension on fsdp


# ---- presets ---------------------------------------------------------------------------------------------

def test_presets_cover_the_slices_and_sizes_asked_for():
    for name in ("v4-8", "v4-16", "v4-32", "v5e-4", "v5e-8", "v5e-16", "v5e-64", "v5e-256", "v5p-8", "v5p-16",
                 "v5p-64", "v5p-128", "v5p-256", "v6e-4", "v6e-8", "v6e-64", "v6e-256", "1xh100", "8xh100"):
        assert name in PRESETS
    assert (PRESETS["v5p-64"].num_devices, PRESETS["v5p-64"].num_hosts, PRESETS["v5p-64"].hbm_bytes) == (32, 8, 95 * GiB)
    assert (PRESETS["v5e-256"].num_devices, PRESETS["v5e-256"].hbm_bytes) == (256, 16 * GiB)
    assert PRESETS["v4-8"].num_devices == 4 and PRESETS["v6e-64"].num_devices == 64
    assert set(RECOMMENDED) == set(SIZES)
    with pytest.raises(KeyError, match="unknown mesh preset 'v9-8'"):
        get_mesh_preset("v9-8")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_layout_uses_the_whole_slice_and_divides_what_it_splits(preset):
    p = PRESETS[preset]
    for size in SIZES:
        data, fsdp, tensor = p.degrees(size)
        assert data * fsdp * tensor == p.num_devices
        assert check_layout(get_preset(size), (data, fsdp, tensor)) == [], (size, preset)


def test_layouts_by_hand():
    # fsdp over the whole slice for small models; tensor 8 (8 KV heads) for 32B/72B.
    assert layout("v5p-64", "qwen2_5_0_5b").mesh == {"data": 1, "fsdp": 32, "tensor": 1}
    assert layout("v5p-128", "qwen2_5_72b").mesh == {"data": 1, "fsdp": 8, "tensor": 8}
    assert layout("v5e-16", "qwen2_5_7b").mesh == {"data": 1, "fsdp": 4, "tensor": 4}  # 4 KV heads
    # 896 = 7 x 128 and 151936 = 1187 x 128: fsdp stops at 128 on 256 chips, the rest is data.
    assert layout("v5e-256", "qwen2_5_0_5b").mesh == {"data": 2, "fsdp": 128, "tensor": 1}
    # 3B has 2 KV heads: the 16 GiB row asks tensor=2, never 4.
    assert layout("v5e-64", "qwen2_5_3b").mesh == {"data": 1, "fsdp": 32, "tensor": 2}
    assert check_layout(get_preset("qwen2_5_0_5b"), (1, 1, 4)) == ["tensor=4 does not divide the 2 KV heads",
                                                                   "tensor=4 does not divide the 14 query heads"]


# ---- the analytic breakdown --------------------------------------------------------------------------------

def test_parameter_bytes_by_hand():
    tiny = get_preset("tiny")
    assert param_bytes_per_device(tiny, (1, 1, 1)) == 4 * TINY_PARAMS
    # fsdp=4 splits every matrix (embed 64 / 4; the vocab 512 / 4); norms and biases stay whole.
    assert param_bytes_per_device(tiny, (1, 4, 1)) == 4 * ((TINY_PARAMS - TINY_REPLICATED) // 4 + TINY_REPLICATED)
    assert param_bytes_per_device(tiny, (1, 4, 1), "bfloat16") * 2 == param_bytes_per_device(tiny, (1, 4, 1))


def test_parameter_bytes_count_stacked_layers_once_per_layer(monkeypatch):
    """Scanned blocks hold each layer parameter stacked [num_layers, ...] with first logical axis "layers":
    counted as every layer, like a list of blocks."""
    import jax.numpy as jnp

    import common.aot.estimate as estimate

    class Stacked(nnx.Module):
        def __init__(self, config):
            self.blocks = nnx.Param(jnp.zeros((config.num_layers, 64, 128)), logical_axes=("layers", "embed", "mlp"))
            self.embed = nnx.Param(jnp.zeros((512, 64)), logical_axes=("vocab", "embed"))

    monkeypatch.setattr(estimate, "abstract_decoder", lambda config, param_dtype="float32": Stacked(config))
    estimate.parameter_layout.cache_clear()
    try:
        tiny = get_preset("tiny").replace(num_layers=3)
        assert param_bytes_per_device(tiny, (1, 1, 1)) == 4 * (3 * 64 * 128 + 512 * 64)
        assert param_bytes_per_device(tiny, (1, 4, 1)) == 4 * (3 * 64 * 128 + 512 * 64) // 4
    finally:
        estimate.parameter_layout.cache_clear()


@pytest.mark.parametrize("size,billions", [("qwen2_5_0_5b", 0.49), ("qwen2_5_1_5b", 1.54), ("qwen2_5_3b", 3.09),
                                           ("qwen2_5_7b", 7.61), ("qwen2_5_14b", 14.7), ("qwen2_5_32b", 32.5),
                                           ("qwen2_5_72b", 72.7)])
def test_parameter_counts_match_the_model_cards(size, billions):
    count = param_bytes_per_device(get_preset(size), (1, 1, 1)) / 4
    assert count == pytest.approx(billions * 1e9, rel=0.01)


def test_estimate_held_state_and_kv_cache_by_hand():
    m = get_preset("qwen2_5_7b")
    shape = JobShape(micro_batch=32, seq_len=4608, response_len=4096, frozen_copies=1, rollout_batch=4096,
                     prompt_len=512, cache_length=4608)
    e = estimate_memory(m, (1, 32, 1), shape)
    assert e.optimizer == 2 * e.params and e.reference == e.params and e.update_outputs == 3 * e.params
    assert e.per_device_micro_batch == 1 and e.per_device_rollouts == 128
    # KV cache: 128 sequences x 4608 slots x (k, v) x 28 layers x 4 KV heads x 128 dims x 2 bytes (bfloat16).
    assert e.kv_cache == 128 * 4608 * 2 * 28 * 4 * 128 * 2
    assert e.params == pytest.approx(7.61e9 * 4 / 32, rel=0.01)


# ---- check_fits: fail before anything starts, saying what to change ------------------------------------------

def _shape(**kw):
    base = dict(micro_batch=8, seq_len=4608, response_len=4096, remat=True, frozen_copies=1, rollout_batch=4096,
                prompt_len=512, cache_length=4608)
    return JobShape(**(base | kw))


def test_check_fits_names_more_chips_for_a_72b_on_a_small_slice():
    p = get_mesh_preset("v5e-4")
    with pytest.raises(MemoryPlanError, match=r"(?s)training update needs .* more chips") as err:
        check_fits(get_preset("qwen2_5_72b"), p.degrees("qwen2_5_72b"), _shape(micro_batch=4),
                   hbm_bytes=p.hbm_bytes, num_devices=p.num_devices, label="72B on v5e-4")
    assert "72B on v5e-4 does not fit" in str(err.value) and "param_dtype='bfloat16'" in str(err.value)


def test_check_fits_names_remat_and_micro_batch_for_activations():
    p = get_mesh_preset("v5p-64")
    with pytest.raises(MemoryPlanError) as err:
        check_fits(get_preset("qwen2_5_7b"), (1, 32, 1), _shape(micro_batch=128, remat=False, rollout_batch=128),
                   hbm_bytes=p.hbm_bytes, num_devices=p.num_devices)
    assert "model.remat=True" in str(err.value) and "grpo.micro_batch_per_device=4 -> 2 (grpo.micro_batch_size=128 -> 64" in str(err.value)


def test_check_fits_names_smaller_sampler_batches_for_the_kv_cache():
    p = get_mesh_preset("v5p-8")
    # all 4096 sequences in one call (grpo.rollout_batch=4096) cannot fit; the sampler-call size it names does
    with pytest.raises(MemoryPlanError, match=r"(?s)rollout sampling .* fewer sequences per sampler call "
                                              r"\(grpo.rollout_batch\): 4096 now \(1024 per device.*; (\d+) "
                                              r"would fit") as err:
        check_fits(get_preset("qwen2_5_1_5b"), (1, 4, 1), _shape(micro_batch=4), hbm_bytes=p.hbm_bytes,
                   num_devices=p.num_devices, sequences_per_call=4096)
    fitting = int(re.search(r"(\d+) would fit", str(err.value)).group(1))
    assert fitting == rollout_chunk(get_preset("qwen2_5_1_5b"), (1, 4, 1), _shape(micro_batch=4), p.hbm_bytes)
    check_fits(get_preset("qwen2_5_1_5b"), (1, 4, 1), _shape(micro_batch=4), hbm_bytes=p.hbm_bytes,
               num_devices=p.num_devices, sequences_per_call=fitting)
    # without a forced size the check plans the calls as the trainer makes them: it fits
    check_fits(get_preset("qwen2_5_1_5b"), (1, 4, 1), _shape(micro_batch=4), hbm_bytes=p.hbm_bytes,
               num_devices=p.num_devices)


def test_estimate_counts_a_bfloat16_reference_at_half_and_a_host_one_at_zero():
    m, degrees = get_preset("qwen2_5_7b"), (1, 32, 1)
    e = estimate_memory(m, degrees, _shape())
    assert e.reference == e.params
    assert estimate_memory(m, degrees, _shape(reference_dtype="bfloat16")).reference * 2 == e.params
    assert estimate_memory(m, degrees, _shape(reference_on_host=True)).reference == 0
    assert estimate_memory(m, degrees, _shape(frozen_copies=0, reference_dtype="bfloat16")).reference == 0


def test_trainer_refuses_a_named_preset_that_cannot_fit():
    from rl_scaling.grpo.setup import check_mesh_preset

    cfg = load_config(REPO_ROOT / "configs/grpo/tiny.py")
    cfg.mesh_preset = "v5e-4"
    cfg.model.preset = "qwen2_5_72b"
    cfg.model.tokenizer = ""
    cfg.grpo.max_response_len = 4096
    cfg.grpo.micro_batch_size = 4
    with pytest.raises(MemoryPlanError, match="v5e-4 .* does not fit"):
        check_mesh_preset(cfg)
    cfg.model.preset = "tiny"
    check_mesh_preset(cfg)  # a few MB: fits


# ---- abstract stand-ins are what the trainer builds -----------------------------------------------------------

def test_abstract_optimizer_state_is_sharded_like_the_eager_init():
    from common.aot.abstract import abstract_model_state, abstract_optimizer_state
    from common.model import Decoder
    from common.sharding import make_mesh, named_sharding
    from rl_scaling.grpo.train_step import make_optimizer

    mesh = make_mesh({"fsdp": 4, "tensor": 2}, jax.devices()[:8])
    config = get_preset("tiny")
    model = Decoder(config, rngs=nnx.Rngs(0))
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):  # as rl_scaling.grpo.setup.build_policy
        var[...] = jax.device_put(var[...], named_sharding(mesh, var.get_metadata()["logical_axes"], var.shape))
    _, params = nnx.split(model)
    optimizer = make_optimizer(1e-3, 0.1, 1.0)
    real = optimizer.init(params)
    _, abstract_params = abstract_model_state(config, mesh, dtype="float32", param_dtype="float32")
    abstract = abstract_optimizer_state(optimizer, abstract_params)
    assert jax.tree.structure(real) == jax.tree.structure(abstract)
    for r, a in zip(jax.tree.leaves(real), jax.tree.leaves(abstract)):
        assert (r.shape, r.dtype) == (a.shape, a.dtype)
        if r.ndim:  # Adam's moments; the step counters are scalars
            assert r.sharding.is_equivalent_to(a.sharding, r.ndim), (r.shape, r.sharding, a.sharding)
    for r, a in zip(jax.tree.leaves(params), jax.tree.leaves(abstract_params)):
        assert r.sharding.is_equivalent_to(a.sharding, r.ndim)


# ---- a real compile for a TPU slice -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_tpu_compile():
    if not libtpu_importable():
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a broken install
            pytest.fail(f"libtpu is not installed; {INSTALL_HINT}")
        pytest.skip(f"libtpu is not installed; {INSTALL_HINT}")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("aot_worker.py")), "v5e:2x2"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(re.search(r"^REPORT (.*)$", out.stdout, re.M).group(1))


def test_tiny_update_and_sampler_compile_for_v5e_2x2(tiny_tpu_compile):
    r = tiny_tpu_compile
    assert r["device_kind"] == "TPU v5 lite" and r["num_devices"] == 4 and r["platform"] == "cpu"
    held = 3 * param_bytes_per_device(get_preset("tiny"), (1, 4, 1))  # parameters + Adam mu, nu per device
    u = r["update"]
    # TPU tiles pad small arrays, so the compiled arguments are at least the exact bytes, and not wildly more.
    assert held <= u["arguments"] <= 4 * held
    # Donation: the new parameters + optimiser state take the old ones' buffers; what is left is the metrics.
    assert held <= u["alias"] <= u["outputs"] <= u["arguments"] and u["outputs"] - u["alias"] < 64 * 1024
    s = r["sampler"]
    assert param_bytes_per_device(get_preset("tiny"), (1, 4, 1)) <= s["arguments"] <= u["arguments"]
    assert u["compile_seconds"] > 0 and s["compile_seconds"] > 0


def _compiled_row(size, preset, train_estimate, sampler_estimate, update_total, sampler_total):
    part = lambda total: {"arguments": total, "outputs": 0, "alias": 0, "temporaries": 0, "generated_code": 0,
                          "compile_seconds": 1.0}
    estimate = {"train_peak": train_estimate, "sample_peak_per_call": sampler_estimate, "reference": 0,
                "optimizer": 0}
    return {"size": size, "preset": preset, "estimate": estimate, "update": part(update_total),
            "sampler": part(sampler_total) | {"batch": 8}}


def test_the_plan_states_the_estimates_error_against_the_compiles():
    from common.aot.table import estimator_error, estimator_error_md

    rows = [_compiled_row("a", "v5p-8", 30, 10, 10, 10), _compiled_row("b", "v5p-8", 15, 9, 10, 10)]
    errors = estimator_error(rows)
    assert errors["update"] == [("a on v5p-8", 3.0), ("b on v5p-8", 1.5)]
    assert errors["sampler"] == [("a on v5p-8", 1.0), ("b on v5p-8", 0.9)]
    text = "\n".join(estimator_error_md(rows))
    assert "training peak: 1.50x to 3.00x" in text and "sampling peak of one sampler call: 0.90x to 1.00x" in text
    assert estimator_error_md([dict(rows[0], update=None, sampler=None)]) == []  # nothing compiled: nothing said


def test_plan_rows_take_recommended_inside_a_list_of_slices():
    from tests.load_file import load_module

    plan = load_module(REPO_ROOT / "tools" / "memory_plan.py", "memory_plan")
    rows = plan.selected_rows("qwen2_5_0_5b,qwen2_5_7b", "recommended,8xh100,v5p-64")
    assert rows == [("qwen2_5_0_5b", "v5e-16"), ("qwen2_5_7b", "v5p-64"), ("qwen2_5_0_5b", "8xh100"),
                    ("qwen2_5_7b", "8xh100"), ("qwen2_5_0_5b", "v5p-64")]
