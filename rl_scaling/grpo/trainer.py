"""The GRPO loop: rollouts through the shared sampler, rewards, advantages, old/reference log-probs, PPO
mini-batch updates; metrics, held-out evaluation, checkpoints, preemption and exact resume.

The algorithm lives in small pure functions (`rl_scaling.grpo.advantages`, `.policy_loss`, ...) and the
jitted step in `train_step`; this file only sequences them and does the I/O.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from common.device_memory import device_memory_limit
from common.distributed import global_batch, initialize, is_main_process, to_host
from common.metrics_writer import MetricsWriter, read_metrics
from common.rollout import Rollout
from common.tokenizer import end_token_ids
from rl_scaling.accounting import ComputeLedger, non_embedding_params, step_compute
from rl_scaling.data import PromptStream
from rl_scaling.evaluation import pass_at_1
from rl_scaling.grpo.advantages import group_advantages, zero_variance_group_fraction
from rl_scaling.grpo.checkpoints import TrainerCheckpoints, latest_step_dir, restore_trainer_checkpoint
from rl_scaling.grpo.preemption import StopSignal, any_process
from rl_scaling.grpo.rollout import pack_rollouts, sample_rollouts
from rl_scaling.grpo.setup import (build_mesh, build_policy, check_mesh_preset, check_micro_batch,
                                   encode_prompts, length_ladder_halves, load_downstream_sets,
                                   load_pool, make_rollout, mesh_degrees, reference_dtype, rollout_cache_length,
                                   sequences_per_call, split_train_heldout)
from rl_scaling.grpo.train_step import LossConfig, make_logprob_fn, make_optimizer, make_update_fn
from rl_scaling.rewards import compute_rewards


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of a step: a pure function of (seed, step), so a resumed run samples the same."""
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


class GRPOTrainer:
    def __init__(self, cfg, workdir: str | Path):
        self.cfg = cfg
        self.workdir = Path(workdir).absolute()  # orbax refuses relative checkpoint paths
        initialize()  # joins a multi-host job (no-op for one process); before any device is touched
        self.workdir.mkdir(parents=True, exist_ok=True)
        check_mesh_preset(cfg)  # a named slice: fail now if the run cannot fit its memory
        self.mesh = build_mesh(cfg)
        self.degrees = mesh_degrees(self.mesh)
        model, self.tokenizer = build_policy(cfg, self.mesh)
        self.model_config = model.config
        self.graphdef, self.params = nnx.split(model)
        g = cfg.grpo
        if g.prompts_per_step % g.mini_batch_prompts:
            raise ValueError(f"grpo.prompts_per_step ({g.prompts_per_step}) must be a multiple of "
                             f"grpo.mini_batch_prompts ({g.mini_batch_prompts})")
        # sequences per gradient micro-batch over the whole mesh, a whole number per batch shard
        self.micro_batch = check_micro_batch(g, self.degrees[0] * self.degrees[1])
        # The frozen reference is a copy only when the KL term is on.
        self.ref_params = self._reference_copy() if g.kl_coef > 0 else None

        pool = load_pool(cfg)
        train, heldout = split_train_heldout(cfg, pool)
        self.train_set, dropped = encode_prompts(train, self.tokenizer, cfg)
        self.heldout_set, _ = encode_prompts(heldout, self.tokenizer, cfg)
        self.dropped_prompts = dropped
        self.stream = PromptStream(self.train_set.problems, g.prompts_per_step,
                                   num_epochs=cfg.data.num_epochs or None)
        self.ids_of = {p.id: ids for p, ids in zip(self.train_set.problems, self.train_set.prompt_ids)}
        self.num_steps = cfg.num_steps or self.stream.total_steps

        self.downstream_sets = load_downstream_sets(cfg, self.tokenizer)
        longest = max(len(p) for p in self.train_set.prompt_ids + self.heldout_set.prompt_ids
                      + [ids for s in self.downstream_sets.values() for ids in s.prompt_ids])
        self.max_new = g.max_response_len
        self.eval_max_new = cfg.eval.max_new_tokens or g.max_response_len
        # Sequences per sampler call: what the device's memory holds (the number tools/memory_plan.py reports
        # for a slice), fixed for the run so that a resumed run samples the same.
        self.sequences_per_call, source = sequences_per_call(cfg, self.model_config, self.degrees,
                                                             device_memory_limit())
        platform = self.mesh.devices.flat[0].platform if self.mesh is not None else jax.default_backend()
        # sequences per generate call: the paged engine takes a step's in one (0), its pool holding as much
        self.rollout: Rollout
        self.rollout, self.generate_chunk = make_rollout(
            cfg, model, mesh=self.mesh, pad_id=self.pad_id, platform=platform,
            max_cache_length=rollout_cache_length(cfg, longest),
            sequences_per_call=self.sequences_per_call)
        tqdm.write(f"rollouts: {type(self.rollout).__name__}, {self.sequences_per_call} of "
                   f"{g.prompts_per_step * g.group_size} sequences per step in memory at once ({source}); "
                   f"micro-batches of {self.micro_batch} sequences over {self.degrees[0] * self.degrees[1]} batch "
                   f"shard(s)")
        self.packed_shapes: set[tuple[int, int]] = set()  # (P, R) the update and log-prob programs have seen
        updates_per_step = g.prompts_per_step // g.mini_batch_prompts
        o = cfg.optim
        self.optimizer = make_optimizer(o.lr, o.weight_decay, o.grad_clip, schedule=o.schedule,
                                        warmup_steps=o.warmup_steps, b1=o.b1, b2=o.b2,
                                        total_updates=(self.num_steps or 0) * updates_per_step)
        self.opt_state = self.optimizer.init(self.params)
        if self.mesh is not None:  # step counters: on the mesh, not on one host's device (multi-host restore)
            replicated = NamedSharding(self.mesh, PartitionSpec())
            self.opt_state = jax.tree.map(
                lambda x: x if isinstance(x.sharding, NamedSharding) else jax.device_put(x, replicated), self.opt_state)
        self.loss_cfg = LossConfig.from_config(g)  # clip, KL, aggregation, loss guards, log-prob chunk
        self.update_fn = make_update_fn(self.graphdef, self.optimizer, self.loss_cfg, cfg.model.remat)
        self.logprob_fn = make_logprob_fn(self.graphdef, g.temperature, self.loss_cfg.logprob_chunk)
        self.ledger = ComputeLedger()
        self.n_params = non_embedding_params(self.model_config)
        self.step = 0
        self.writer = MetricsWriter(self.workdir, enabled=is_main_process())
        self.stop_signal = StopSignal()
        self.checkpoints = TrainerCheckpoints(self.workdir, keep=cfg.checkpoint.keep)  # clears unfinished saves
        self._maybe_restore()

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # ---- checkpoints ------------------------------------------------------------------------------
    def _maybe_restore(self) -> None:
        step_dir = latest_step_dir(self.workdir)
        if step_dir is None:
            return
        self.params, self.opt_state, state = restore_trainer_checkpoint(step_dir, self.params, self.opt_state)
        self.step = state["step"]
        self.packed_shapes = {tuple(s) for s in state.get("packed_shapes", [])}
        self.stream.load_state_dict(state["stream"])
        self.ledger.load_state_dict(state["ledger"])
        self.writer.truncate_after(self.step)
        tqdm.write(f"resumed from {step_dir} (step {self.step})")

    def save(self) -> Path:
        """Starts an asynchronous save of this step (`TrainerCheckpoints.save`); returns its directory, complete
        once `self.checkpoints.wait()` returns."""
        model = nnx.merge(self.graphdef, self.params)
        state = {"step": self.step, "stream": self.stream.state_dict(), "ledger": self.ledger.state_dict(),
                 "packed_shapes": sorted(self.packed_shapes)}
        return self.checkpoints.save(self.step, model, self.tokenizer, self.opt_state, state,
                                     source=str(self.cfg.model.path))

    # ---- evaluation -------------------------------------------------------------------------------
    def _pass_at_1(self, prompt_set, seed_stream: int) -> float:
        """pass@1 of the current policy on a prompt set, with the eval config's sampling."""
        e = self.cfg.eval
        return pass_at_1(self.rollout, self.params, self.tokenizer, prompt_set.prompt_ids,
                         [p.reference for p in prompt_set.problems], num_samples=e.num_samples,
                         temperature=e.temperature, max_new_tokens=self.eval_max_new,
                         seed=step_seed(self.cfg.seed + seed_stream, self.step),
                         stop_token_ids=end_token_ids(self.tokenizer), timeout_s=self.cfg.reward_timeout_s)

    def evaluate(self) -> dict[str, float]:
        score = self._pass_at_1(self.heldout_set, seed_stream=1)
        return {"eval/pass@1": score, "eval/L": 1.0 - score, "eval/num_problems": float(len(self.heldout_set.problems)),
                "eval/num_samples": float(self.cfg.eval.num_samples)}

    def evaluate_downstream(self) -> dict[str, float]:
        """pass@1 on each of eval.downstream (real benchmark sets, same template and sampling as held-out)."""
        out = {}
        for name, prompt_set in self.downstream_sets.items():
            score = self._pass_at_1(prompt_set, seed_stream=2)
            out[f"downstream/{name}/pass@1"] = score
            out[f"downstream/{name}/num_problems"] = float(len(prompt_set.problems))
            tqdm.write(f"step {self.step}: {name} pass@1 {score:.3f} ({len(prompt_set.problems)} problems x "
                       f"{self.cfg.eval.num_samples} samples)")
        return out

    # ---- one step ---------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        g, timings = self.cfg.grpo, {}
        problems = next(self.stream)
        prompt_ids = [self.ids_of[p.id] for p in problems]

        t = time.perf_counter()
        rollouts = sample_rollouts(self.rollout, self.params, prompt_ids, group_size=g.group_size,
                                   max_new_tokens=self.max_new,
                                   temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
                                   seed=step_seed(self.cfg.seed, self.step),
                                   stop_token_ids=end_token_ids(self.tokenizer),
                                   sequences_per_call=self.generate_chunk)
        timings["time/rollout"] = time.perf_counter() - t

        t = time.perf_counter()
        texts = [self.tokenizer.decode(r, skip_special_tokens=True) for r in rollouts.response_ids]
        references = [p.reference for p in problems for _ in range(g.group_size)]
        rewards = compute_rewards(texts, references, dict(self.cfg.reward), timeout_s=self.cfg.reward_timeout_s)
        advantages = np.asarray(group_advantages(jnp.asarray(rewards), g.group_size, normalize_std=g.normalize_std))
        timings["time/reward"] = time.perf_counter() - t

        batch = pack_rollouts(rollouts, pad_id=self.pad_id, mask_truncated=g.mask_truncated,
                              min_bucket=int(g.get("min_length_bucket", 16)),
                              max_prompt_len=self.cfg.data.max_prompt_len, max_response_len=g.max_response_len,
                              halves=length_ladder_halves(g))
        self.packed_shapes.add((batch.prompt_len, batch.response_len))
        n = len(rollouts.response_ids)
        t = time.perf_counter()
        old_logp = self._logprobs(self.params, batch) if g.old_logprobs == "recompute" else \
            self._sampler_logprobs(rollouts, batch)
        ref_logp = self._logprobs(self._reference_on_device(), batch) if self.ref_params is not None else None
        timings["time/logprobs"] = time.perf_counter() - t

        t = time.perf_counter()
        seqs_per_update = g.mini_batch_prompts * g.group_size
        update_metrics = []
        for lo in range(0, n, seqs_per_update):
            sl = slice(lo, lo + seqs_per_update)
            mini = {"tokens": batch.tokens[sl], "start": batch.start[sl], "targets": batch.targets[sl],
                    "mask": batch.mask[sl], "advantages": advantages[sl].astype(np.float32), "old_logp": old_logp[sl]}
            if ref_logp is not None:
                mini["ref_logp"] = ref_logp[sl]
            mini = {k: self._put(v.reshape(-1, self.micro_batch, *v.shape[1:])) for k, v in mini.items()}
            with self._mesh_ctx():
                self.params, self.opt_state, m = self.update_fn(self.params, self.opt_state, mini)
            update_metrics.append(jax.device_get(m))
        timings["time/update"] = time.perf_counter() - t

        resp_lens = np.array([len(r) for r in rollouts.response_ids])
        prompt_tokens = int(sum(len(p) for p in rollouts.prompt_ids))
        compute = step_compute(self.model_config, prompt_tokens, int(resp_lens.sum()),
                               sequence_lengths=[len(p) + len(r) for p, r in zip(rollouts.prompt_ids,
                                                                                  rollouts.response_ids)],
                               kl_coef=g.kl_coef, old_logprob_forward=g.old_logprobs == "recompute")
        self.ledger.add_step(compute, len(problems))
        self.step += 1
        step_time = sum(timings.values())
        metrics = {
            "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
            "reward/zero_variance_groups": float(zero_variance_group_fraction(jnp.asarray(rewards), g.group_size)),
            "response/length_mean": float(resp_lens.mean()), "response/length_max": float(resp_lens.max()),
            "response/truncated_share": float(rollouts.truncated.mean()),
            "tokens/step": float(prompt_tokens + resp_lens.sum()),
            "tokens/per_second": float((prompt_tokens + resp_lens.sum()) / step_time),
            "time/step": step_time, **timings,
            "rollout/sequences_per_call": float(self.sequences_per_call), "rollout/calls": float(rollouts.calls),
            "compile/programs": float(len(self.packed_shapes)),
            **{f"train/{k}": float(np.mean([m[k] for m in update_metrics])) for k in update_metrics[0]},
            **self.ledger.metrics(),
        }
        return metrics

    def _put(self, x: np.ndarray, batch_axis: int = 1):
        """A host array (the same on every host) as a global array split over (data, fsdp) on
        `batch_axis`; each host contributes only the rows its own devices hold."""
        if self.mesh is None:
            return jnp.asarray(x)
        from common.sharding import named_sharding
        axes = (None,) * batch_axis + ("batch",) + (None,) * (x.ndim - batch_axis - 1)
        return global_batch(x, named_sharding(self.mesh, axes, x.shape))

    def _mesh_ctx(self):
        return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

    def _logprobs(self, params, batch) -> np.ndarray:
        """Per-token log-probs [N, R] of the responses under `params`, in micro-batches."""
        m = self.micro_batch
        out = []
        for lo in range(0, batch.tokens.shape[0], m):
            sl = slice(lo, lo + m)
            with self._mesh_ctx():
                out.append(to_host(self.logprob_fn(params, self._put(batch.tokens[sl], 0),
                                                   self._put(batch.start[sl], 0), self._put(batch.targets[sl], 0))))
        return np.concatenate(out)

    # ---- the frozen reference ----------------------------------------------------------------------
    def _reference_copy(self):
        """The KL reference: a copy of the parameters in grpo.reference_dtype (a new buffer even at the same
        dtype: the update donates the policy's), in host memory when grpo.reference_on_host and the
        devices have one (`pinned_host`)."""
        dtype = jnp.dtype(reference_dtype(self.cfg))
        shardings = jax.tree.map(lambda x: x.sharding, self.params)
        cast = lambda x: x.astype(dtype) if x.dtype != dtype else jnp.copy(x)  # never the input's buffer
        ref = jax.jit(lambda p: jax.tree.map(cast, p), out_shardings=shardings)(self.params)
        self._ref_shardings = shardings
        if not self.cfg.grpo.get("reference_on_host", False):
            return ref
        kinds = {m.kind for m in jax.local_devices()[0].addressable_memories()}
        if "pinned_host" not in kinds:
            warnings.warn(f"grpo.reference_on_host: {jax.default_backend()} devices have no pinned_host memory "
                          f"(only {sorted(kinds)}); the reference stays on the devices")
            return ref
        tqdm.write("reference policy in host memory (pinned_host); moved to the devices for its log-probs"
                   + (" (on a CPU host and device memory are the same RAM: nothing is saved)"
                      if jax.default_backend() == "cpu" else ""))
        return jax.device_put(ref, jax.tree.map(lambda s: s.with_memory_kind("pinned_host"), shardings))

    def _reference_on_device(self):
        """The reference parameters where the log-prob program reads them (a device copy while in use, when
        they live in host memory)."""
        on_host = any(x.sharding.memory_kind == "pinned_host" for x in jax.tree.leaves(self.ref_params))
        return jax.device_put(self.ref_params, self._ref_shardings) if on_host else self.ref_params

    @staticmethod
    def _sampler_logprobs(rollouts, batch) -> np.ndarray:
        out = np.zeros(batch.targets.shape, np.float32)
        for i, lp in enumerate(rollouts.sampler_logprobs):
            out[i, :len(lp)] = lp
        return out

    # ---- the loop ---------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        cfg = self.cfg
        last_eval = {}
        if self.step == 0:
            last_eval = {**self.evaluate(), **self.evaluate_downstream()}
            self.writer.write(0, {**last_eval, **self.ledger.metrics()})
            tqdm.write(f"step 0: held-out pass@1 {last_eval['eval/pass@1']:.3f} "
                       f"({len(self.heldout_set.problems)} problems x {cfg.eval.num_samples} samples)")
        stop = False
        with self.stop_signal.installed(), tqdm(total=self.num_steps, initial=self.step, desc="GRPO",
                                                dynamic_ncols=True) as bar:
            while self.step < self.num_steps and not stop:
                metrics = self.train_step()
                final = self.step == self.num_steps
                if (cfg.eval.every and self.step % cfg.eval.every == 0) or final:
                    last_eval = self.evaluate()
                    if final:
                        last_eval.update(self.evaluate_downstream())
                    metrics.update(last_eval)
                self.writer.write(self.step, metrics)
                stop = any_process(self.stop_signal.requested)  # a signal on any host: all save this step, stop
                if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or final or stop:
                    self.save()  # asynchronous: the next step starts while it is written
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", len=f"{metrics['response/length_mean']:.0f}")
        self.checkpoints.wait()  # the last save is complete before the run reports or exits
        if self.step >= self.num_steps and is_main_process():
            (self.workdir / "DONE").write_text(f"{self.step}\n")
            self._print_before_after()
        self.writer.close()
        return last_eval

    def _print_before_after(self) -> None:
        evals = [r for r in read_metrics(self.workdir / "metrics.jsonl") if "eval/pass@1" in r]
        if len(evals) >= 2:
            first, last = evals[0], evals[-1]
            tqdm.write(f"held-out pass@1: step {first['step']} {first['eval/pass@1']:.3f} -> step {last['step']} "
                       f"{last['eval/pass@1']:.3f} ({int(last['eval/num_problems'])} problems x "
                       f"{int(last['eval/num_samples'])} samples at temperature {self.cfg.eval.temperature})")
