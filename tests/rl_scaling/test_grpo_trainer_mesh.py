"""One GRPO step of the tiny config on 8 fake CPU devices (tests/conftest.py): the update's micro-batches really
split over the mesh (issue 18, item 5), rollouts go to the sampler in calls of the trainer's size (item 1), the
reference copy is bfloat16 in host memory (item 6), and the packed shapes are counted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from common.config_file import load_config
from rl_scaling.grpo.setup import check_micro_batch, micro_batch_sequences
from tests.multiprocess import REPO_ROOT


class CallRecorder:
    """Wraps a callable object's method, recording each call's arguments before delegating."""

    def __init__(self, target, record):
        self.target, self.record, self.calls = target, record, []

    def __call__(self, *args, **kwargs):
        self.calls.append(self.record(*args, **kwargs))
        return self.target(*args, **kwargs)


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    from rl_scaling.grpo.trainer import GRPOTrainer

    assert jax.device_count() == 8
    cfg = load_config(REPO_ROOT / "configs/grpo/tiny.py")
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, -1, 1
    cfg.num_steps = 1
    cfg.grpo.micro_batch_size = 0
    cfg.grpo.micro_batch_per_device = 2  # 16 sequences per micro-batch over 8 shards; a mini-batch is 32
    cfg.grpo.rollout_batch = 32  # 16 prompts x 8 = 128 sequences: 4 calls of 4 prompts
    cfg.grpo.kl_coef = 0.01
    cfg.grpo.reference_dtype = "bfloat16"
    cfg.grpo.reference_on_host = True
    trainer = GRPOTrainer(cfg, tmp_path_factory.mktemp("mesh_step"))
    generate = CallRecorder(trainer.rollout.generate, lambda params, prompts, **kw: (list(prompts), kw["seed"]))
    trainer.rollout.generate = generate
    update = CallRecorder(trainer.update_fn, lambda params, opt_state, mini: {
        k: (v.shape, v.sharding.spec, len(v.sharding.device_set), v.addressable_shards[0].data.shape)
        for k, v in mini.items()})
    trainer.update_fn = update
    metrics = trainer.train_step()
    return trainer, metrics, generate.calls, update.calls


def test_update_micro_batches_are_split_over_the_batch_shards(one_step):
    trainer, metrics, _, updates = one_step
    assert trainer.micro_batch == 16 and len(updates) == 4  # 4 mini-batches of 32 sequences
    for mini in updates:
        shape, spec, devices, shard = mini["tokens"]
        assert shape[:2] == (2, 16) and devices == 8
        assert spec == PartitionSpec(None, "fsdp", None)  # the batch axis, not replicated
        assert shard[:2] == (2, 2)  # each device holds 2 of the 16 sequences
        for key in ("advantages", "mask", "old_logp", "ref_logp"):
            assert mini[key][1][1] == "fsdp", key
    assert np.isfinite(metrics["train/loss"])


def test_rollouts_go_to_the_sampler_in_calls_of_whole_groups(one_step):
    trainer, metrics, calls, _ = one_step
    assert trainer.sequences_per_call == 32
    assert [len(prompts) for prompts, _ in calls] == [32] * 4
    for prompts, _ in calls:  # 4 whole groups of 8 copies of one prompt
        assert all(prompts[i] == prompts[i - i % 8] for i in range(32))
        assert len({tuple(p) for p in prompts}) <= 4
    assert len({seed for _, seed in calls}) == 4
    assert metrics["rollout/sequences_per_call"] == 32 and metrics["rollout/calls"] == 4
    assert metrics["compile/programs"] == 1 == len(trainer.packed_shapes)


def test_reference_is_a_bfloat16_copy_in_host_memory(one_step):
    trainer, metrics, _, _ = one_step
    ref, policy = jax.tree.leaves(trainer.ref_params), jax.tree.leaves(trainer.params)
    assert ref and all(r.dtype == jnp.bfloat16 for r in ref)
    assert all(r.sharding.memory_kind == "pinned_host" for r in ref)
    assert all(p.dtype == jnp.float32 for p in policy)
    assert all(r.shape == p.shape for r, p in zip(ref, policy))
    assert np.isfinite(metrics["train/kl"])  # the KL term ran on its log-probs


def test_micro_batch_per_device_and_its_checks():
    cfg = load_config(REPO_ROOT / "configs/grpo/tiny.py").grpo  # mini-batch 4 prompts x 8 = 32 sequences
    assert micro_batch_sequences(cfg, 8) == 16  # micro_batch_size, global
    cfg.micro_batch_size = 4
    with pytest.raises(ValueError, match=r"micro-batch of 4 sequences .* data x fsdp = 8 batch shards"):
        check_micro_batch(cfg, 8)
    cfg.micro_batch_size, cfg.micro_batch_per_device = 0, 2
    assert check_micro_batch(cfg, 8) == 16 and check_micro_batch(cfg, 2) == 4
    with pytest.raises(ValueError, match="does not split into micro-batches of 64"):
        check_micro_batch(cfg, 32)
    cfg.micro_batch_size = 8  # a global count, when given, wins (tools/launch.py passes its slice's)
    assert micro_batch_sequences(cfg, 8) == 8
    cfg.micro_batch_size = cfg.micro_batch_per_device = 0
    with pytest.raises(ValueError, match="set grpo.micro_batch_size .* or grpo.micro_batch_per_device"):
        micro_batch_sequences(cfg, 8)
