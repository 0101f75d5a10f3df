"""The memory plan's rollout-engine column (tools/memory_plan.py): the engine it compiles is the one the GRPO
trainer builds — the same slots, page size and pool, from `make_rollout` itself — and its bytes come from a real
compile of the engine's decode step, cached so that a rerun does not compile again. The tiny config on the 8
fake CPU devices (tests/conftest.py), with the engine's sizes set away from their defaults."""

import math

import jax
import pytest
from flax import nnx

from common.aot.compiled import ProgramCache
from common.config_file import load_config
from rl_scaling.grpo.setup import job_shape
from tests.load_file import load_module
from tests.multiprocess import REPO_ROOT

SLOTS, PAGE, PER_CALL = 12, 8, 32
SHARDS = 8  # fsdp over the 8 devices: the batch's shards, each with its own page pool


@pytest.fixture(scope="module")
def trainer_and_plan(tmp_path_factory):
    from rl_scaling.grpo.trainer import GRPOTrainer

    assert jax.device_count() == 8
    cfg = load_config(REPO_ROOT / "configs/grpo/tiny.py")
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, -1, 1
    cfg.grpo.micro_batch_size = 0
    cfg.grpo.micro_batch_per_device = 2
    cfg.grpo.rollout_engine = "paged"  # "auto" is the static sampler on a CPU; the plan's TPU rows get the engine
    cfg.grpo.engine_slots = SLOTS
    cfg.grpo.engine_page_size = PAGE
    cfg.grpo.rollout_batch = PER_CALL
    cfg.grpo.max_response_len = 20
    trainer = GRPOTrainer(cfg, tmp_path_factory.mktemp("plan_engine"))
    plan = load_module(REPO_ROOT / "tools" / "memory_plan.py", "memory_plan_engine_test")
    return cfg, trainer, plan


def test_the_plans_engine_is_the_trainers(trainer_and_plan, tmp_path, monkeypatch):
    cfg, trainer, plan = trainer_and_plan
    engine = trainer.rollout
    longest = max(len(p) for p in trainer.train_set.prompt_ids + trainer.heldout_set.prompt_ids)
    context = longest + 20  # the longest prompt and max_response_len (the trainer's max_cache_length)
    # a shard's pool: the null page and what one chip held of the sampler's calls
    pages = 1 + PER_CALL // SHARDS * math.ceil(context / PAGE)
    assert (engine.max_slots, engine.page_size, engine.max_cache_length, engine.num_pages) == (
        SLOTS, PAGE, context, pages)

    # the plan at the trainer's longest prompt: its engine numbers are the trainer's, from make_rollout
    shape = job_shape(cfg, longest, trainer.degrees)
    built = plan.trainer_engine(cfg, trainer.model_config, trainer.mesh, shape, longest,
                                trainer.sequences_per_call, "cpu", SHARDS)
    assert (built.max_slots, built.page_size, built.max_cache_length, built.num_pages) == (
        SLOTS, PAGE, context, pages)
    row = {"rollout_chunk": trainer.sequences_per_call, "degrees": list(trainer.degrees),
           "estimate": {"params": 0, "optimizer": 0, "reference": 0},
           "engine_plan": plan.engine_sizes(built, trainer.degrees)}
    assert row["engine_plan"] | {"copy_bytes": 0, "pool_bytes": 0} == {
        "slots": SLOTS, "num_pages": pages, "page_size": PAGE, "max_cache_length": context, "copy_bytes": 0,
        "pool_bytes": 0}

    # the largest decode step: every slot, a shard's rows as the trainer's engine rounds them on a mesh (a power
    # of two: 12 slots over 8 shards are 2 a shard), each row listing the pages of a full context
    cache = ProgramCache(tmp_path)
    plan.plan_engine(row, cache, cfg, trainer.model_config, trainer.mesh, shape, longest, "tiny", platform="cpu")
    step = row["engine"]
    assert (step["rows"], step["pages_per_row"]) == (16, math.ceil(context / PAGE))
    assert (engine.shards, engine.shard_slots, engine._rows(engine.shard_slots)) == (SHARDS, 2, 2)
    assert (step["sequences_per_call"], step["num_pages"], step["slots"]) == (PER_CALL, pages, SLOTS)

    # bytes from the compiler: the step's arguments hold at least the weights and the pool on each device
    held = row["engine_plan"]["copy_bytes"] + row["engine_plan"]["pool_bytes"]
    assert held <= step["arguments"] < 2 * held + 2**20
    assert step["compile_seconds"] > 0 and step["temporaries"] > 0
    assert len(list(tmp_path.glob("engine__tiny__s16__*.json"))) == 1

    # resumed: a second plan reads the cached result instead of compiling
    import common.aot.engine as aot_engine

    monkeypatch.setattr(aot_engine, "compile_engine_step", lambda *a, **k: pytest.fail("compiled again"))
    again = dict(row, engine=None)
    plan.plan_engine(again, cache, cfg, trainer.model_config, trainer.mesh, shape, longest, "tiny",
                     platform="cpu")
    assert again["engine"] == step


def test_an_engine_that_does_not_fit_is_halved_as_grpo_rollout_batch_would(trainer_and_plan, tmp_path):
    cfg, trainer, plan = trainer_and_plan
    longest = trainer.rollout.max_cache_length - 20
    shape = job_shape(cfg, longest, trainer.degrees)
    row = {"rollout_chunk": PER_CALL, "degrees": list(trainer.degrees),
           "estimate": {"params": 100, "optimizer": 200, "reference": 0}}
    cache = ProgramCache(tmp_path)
    plan.plan_engine(row, cache, cfg, trainer.model_config, trainer.mesh, shape, longest, "tiny", platform="cpu")
    full = plan.row_total(row["engine"])
    # a budget the trainer's engine misses by a byte beside the trainer's state: the plan compiles half the pool
    plan.plan_engine(row, cache, cfg, trainer.model_config, trainer.mesh, shape, longest, "tiny", platform="cpu",
                     budget=full + 300 - 1)
    step = row["engine"]
    assert [t["batch"] for t in row["engine_tried"]] == [PER_CALL, PER_CALL // 2]
    assert step["sequences_per_call"] == PER_CALL // 2 and plan.row_total(step) < full
    # what the trainer builds with grpo.rollout_batch=16
    from rl_scaling.grpo.setup import make_rollout

    cfg16 = cfg.copy_and_resolve_references()
    cfg16.grpo.rollout_batch = PER_CALL // 2
    model = nnx.merge(trainer.graphdef, trainer.params)
    engine16, _ = make_rollout(cfg16, model, mesh=trainer.mesh, pad_id=0, platform="cpu",
                               max_cache_length=trainer.rollout.max_cache_length, sequences_per_call=PER_CALL // 2)
    assert (step["num_pages"], step["slots"]) == (engine16.num_pages, engine16.max_slots) == (
        1 + PER_CALL // 2 // SHARDS * math.ceil(trainer.rollout.max_cache_length / PAGE), SLOTS)
    from common.aot.table import verdict

    verdict_row = row | {"hbm_bytes": full + 300 - 1, "rollout_batch": 128, "update": None, "sampler": None,
                         "estimate": row["estimate"] | {"train_peak": 0, "sample_peak_per_call": 0}}
    assert verdict(verdict_row, 1.0) == (
        "DOES NOT FIT with the rollout engine at the trainer's 32 sequences per call; grpo.rollout_batch=16 does, "
        "or grpo.rollout_engine='static' (rollouts in calls of 32)")


def test_the_engines_peak_decides_the_verdict(trainer_and_plan):
    _, _, plan = trainer_and_plan
    from common.aot.table import engine_peak, verdict

    part = lambda total: {"arguments": total, "outputs": 0, "alias": 0, "temporaries": 0, "generated_code": 0,
                          "compile_seconds": 1.0}
    row = {"hbm_bytes": 100, "rollout_chunk": 8, "rollout_batch": 8, "update": part(10), "sampler": part(10) | {
        "batch": 8}, "estimate": {"params": 4, "optimizer": 8, "reference": 4},
        "engine_plan": {"copy_bytes": 2, "pool_bytes": 60}, "engine": part(70) | {"sequences_per_call": 8}}
    assert engine_peak(row) == 70 + 16 and verdict(row, 1.0) == "fits"
    row["engine"] = part(90) | {"sequences_per_call": 8}
    assert verdict(row, 1.0) == "DOES NOT FIT with the rollout engine; grpo.rollout_engine='static' fits"
    assert engine_peak(dict(row, engine=None)) == 2 + 60 + 16  # analytic without a compile
    assert engine_peak(dict(row, engine_plan=None)) is None  # the static sampler: no engine in the verdict
