"""The rollout engine: continuous batching over a paged KV cache, as a `Rollout`.

    engine = Engine(model, max_slots=64, page_size=16, num_pages=4096)
    out = engine.generate(nnx.state(model), prompt_ids, max_new_tokens=512, temperature=1.0, seed=0)

Each iteration admits waiting prompts into free slots (bounded by free pages, `common.engine.scheduler`),
runs one prefill call for chunks of newly admitted prompts, then one decode call for every sequence that is
generating: one step, or when no prompt is being prefilled `decode_steps` steps dispatched back to back, the
host reading their tokens once (on an accelerator a step of a small model is shorter than the host's work
around it); a sequence that stops frees its slot and pages at once, and the next prompt takes them. Decode
attention reads only each row's filled pages (the call lists as many pages as its longest row holds, in
power-of-two buckets), through the attention backend's `attend_paged`, or the backend's own pass
(`paged_forward`: on the CPU, one kernel call a layer that reads the pool in place). Shapes come from small sets
(rows in powers of two, or multiples of 8 on a CPU; pages in powers of two; prefill lengths in
`length_bucket`s), so a run compiles a bounded number of programs.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence as Seq

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from common.device_memory import device_memory_limit
from common.engine.pages import PageCache
from common.engine.programs import TOP_LOGPROBS, copy_function, step_function
from common.engine.scheduler import Sampling, Scheduler, Sequence, ShardedScheduler, Work
from common.engine.weights import inference_copy
from common.model import Decoder
from common.paged_kv import NULL_PAGE, PagedKV, PageView, pool_bytes
from common.per_version import PerVersion
from common.prefill_plan import bucket, length_bucket
from common.rollout import Rollout, SampleOutput
from common.sampling import SamplingMode, check_logprobs_not_nan
from common.sharding import batch_shards
from common.vocab import check_prompt_ids


class PromptTooLongError(ValueError):
    """A prompt with its new-token budget does not fit the model's positions or the page pool."""


DEFAULT_DECODE_STEPS = 4  # decode steps a round trip on an accelerator (a CPU step is long beside the host's: 1)
# admission keeps pages for this share of the running sequences' remaining budgets (SGLang's new-token ratio, fixed)
DEFAULT_GROWTH_RESERVE = 0.3
DEFAULT_POOL_BYTES = 2**30  # the pool where the device reports no memory (CPU) and none is given
DEVICE_POOL_SHARE = 0.4  # of a device's memory, where it reports its limit and no budget is given


def default_pool_bytes() -> int:
    """The page pool's budget when the caller gives none: DEVICE_POOL_SHARE of the device's memory limit, or
    DEFAULT_POOL_BYTES where the device reports none."""
    limit = device_memory_limit()
    return int(limit * DEVICE_POOL_SHARE) if limit else DEFAULT_POOL_BYTES


def default_decode_steps(platform: str) -> int:
    """Decode steps a host round trip on `platform` ("cpu", "gpu", "tpu"): 1 on a CPU, where a step is long beside
    the host's work around it; DEFAULT_DECODE_STEPS on an accelerator."""
    return 1 if platform == "cpu" else DEFAULT_DECODE_STEPS


def pages_for_budget(config, memory_bytes: int, page_size: int, dtype) -> int:
    """Pages (the null page included) a pool of at most `memory_bytes` holds."""
    return max(2, memory_bytes // pool_bytes(config, 1, page_size, dtype))


class Engine(Rollout):
    """Holds the page pool and the compiled programs for one model.

    On a mesh whose batch is split S ways (data x fsdp, `common.sharding.batch_shards`) there is one pool per
    batch shard, on that shard's chips, and the slots are split S ways: each sequence lives on one shard and
    a call computes every shard's rows side by side (`common.engine.programs.step_function`).
    max_slots: sequences generating at once (the largest decode batch; over all shards). page_size: tokens a
    page. num_pages: the pool of each batch shard (page 0 is its null page), or memory_bytes: a shard's pool's
    budget (`pages_for_budget`), or neither: enough for a shard's slots at max_cache_length tokens each, at
    most `default_pool_bytes()`.
    prefill_chunk: tokens of one prompt per prefill call; prefill_tokens: of all prompts in one prefill call
    (default 4 chunks). min_rows: the smallest row bucket (fewer shapes to compile). row_step: a call's rows
    rounded up to a multiple of this; 0: to a power of two; None (default): min_rows on one CPU device, where
    every padding row costs its share of a step's products and a compile is cheap, else 0 (an accelerator's
    decode step is bound by reading the weights: padding rows cost little, and fewer shapes compile; rows
    must divide over the mesh). weights_dtype: decode from a copy of the parameters in this dtype, laid
    out for inference on the mesh (`common.engine.weights`: split over tensor only, no all-gather of weights
    in a decode step), made once per parameter version; None: the given parameters as they are on one
    device, the copy in their own dtype on a mesh. decode_steps: decode steps dispatched back to back before
    the host reads their tokens, when no prompt is being prefilled (None: 1 on a CPU, DEFAULT_DECODE_STEPS on
    an accelerator); a sequence that stops inside them costs the remaining steps (computed, dropped), and a new
    prompt waits for them to end; the tokens are the same for any value. growth_reserve: admission keeps free
    pages for this share of every running sequence's remaining token budget (and the newcomer's), so sequences
    admitted while short do not outgrow the pool and get preempted (recomputed) as they lengthen; 0: admit while
    the prompt's pages are free."""

    def __init__(self, model: Decoder, *, mesh: Mesh | None = None, max_slots: int = 64, page_size: int = 16,
                 num_pages: int | None = None, memory_bytes: int | None = None,
                 max_cache_length: int | None = None, prefill_chunk: int = 256, prefill_tokens: int | None = None,
                 min_rows: int = 8, row_step: int | None = None, pad_id: int = 0, weights_dtype=None,
                 decode_steps: int | None = None, growth_reserve: float = DEFAULT_GROWTH_RESERVE):
        self.graphdef, self.state = nnx.split(model)
        self.config = model.config
        self.dtype = model.dtype
        self.mesh = mesh
        self.max_slots, self.page_size, self.min_rows, self.pad_id = max_slots, page_size, min_rows, pad_id
        if row_step is None:
            row_step = min_rows if mesh is None and jax.default_backend() == "cpu" else 0
        self.row_step = row_step
        if decode_steps is None:
            decode_steps = default_decode_steps(jax.default_backend())
        if decode_steps < 1:
            raise ValueError(f"decode_steps must be >= 1, got {decode_steps}")
        self.decode_steps = decode_steps
        if not 0 <= growth_reserve <= 1:
            raise ValueError(f"growth_reserve is a share of the remaining token budget, in [0, 1]; "
                             f"got {growth_reserve}")
        self.growth_reserve = growth_reserve
        self.max_cache_length = max_cache_length or model.config.max_position_embeddings
        self.shards = batch_shards(mesh)
        self.shard_slots = math.ceil(max_slots / self.shards)  # a shard's largest decode batch
        if num_pages is None:
            budget = pages_for_budget(model.config, memory_bytes or default_pool_bytes(), page_size, self.dtype)
            full = 1 + self.shard_slots * math.ceil(self.max_cache_length / page_size)
            num_pages = budget if memory_bytes else min(full, budget)
        self.num_pages = num_pages
        self.prefill_chunk = prefill_chunk
        self.prefill_tokens = prefill_tokens or 4 * prefill_chunk
        self.weights_dtype = weights_dtype
        self.backend = model.backend
        # the inference copy, and the backend's data for its own pass (`AttentionBackend.prepare`), per version
        self._weights = PerVersion(lambda params: inference_copy(
            params, self.mesh, self.weights_dtype or jax.tree.leaves(params)[0].dtype))
        self._prepared = PerVersion(lambda params: self.backend.prepare(nnx.merge(self.graphdef, params)))
        self._kv: PagedKV | None = None
        self._compiled: dict[tuple, Any] = {}
        self._copier = jax.jit(copy_function(mesh), donate_argnums=(0,))
        self.stats: dict[str, int] = {}

    # ---- programs ---------------------------------------------------------------------------------

    @property
    def compile_keys(self) -> list[tuple]:
        return list(self._compiled)

    def _program(self, rows: int, tokens: int, pages: int, mode: SamplingMode, top: int = 0):
        key = (rows, tokens, pages, mode) + ((top,) if top else ())
        if key not in self._compiled:
            self._compiled[key] = jax.jit(step_function(self.graphdef, mode, top, self.mesh), donate_argnums=(2,))
        return self._compiled[key]

    def _inference_weights(self, params):
        """The parameters the programs decode from: `params`, or their inference copy (made once a version)."""
        if self.weights_dtype is None and self.mesh is None:
            return params
        return self._weights.get(params)

    def _pool(self) -> PagedKV:
        if self._kv is None:
            ctx = jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
            with ctx:
                self._kv = jax.jit(lambda: PagedKV.zeros(self.config, self.num_pages * self.shards, self.page_size,
                                                         self.dtype))()
        return self._kv

    # ---- one call -----------------------------------------------------------------------------------

    def _arrays(self, work: Work, rows: int, width: int, pages: int, steps: list[int]):
        """Host arrays of a call in the program's order (`pass_and_sample`): tokens [rows, width], PageView, last
        [rows], seeds, sequence ids, token index, temperature, top_p (padding rows: seed 0, temperature and top_p
        1), then steps_left (steps: each row's own decode steps; padding rows 0)."""
        tokens = np.full((rows, width), self.pad_id, np.int32)
        positions = np.zeros((rows, width), np.int32)
        lengths = np.zeros((rows,), np.int32)
        table = np.full((rows, pages), NULL_PAGE, np.int32)
        last = np.zeros((rows,), np.int32)
        ids = np.zeros((rows,), np.int32)
        index, seeds = np.zeros((rows,), np.int32), np.zeros((rows,), np.int32)
        temperature, top_p = np.ones((rows,), np.float32), np.ones((rows,), np.float32)
        steps_left = np.zeros((rows,), np.int32)
        steps_left[:len(steps)] = steps
        for r, (seq, first, n) in enumerate(work.rows):
            tokens[r, :n] = [seq.token(p) for p in range(first, first + n)]
            positions[r] = first + np.arange(width)
            lengths[r] = first + n
            used = self._pages_needed(first + max(n, steps[r]))
            table[r, :used] = seq.pages[:used]
            last[r], ids[r], index[r] = n - 1, seq.id, len(seq.generated)
            seeds[r], temperature[r], top_p[r] = seq.sampling.seed, seq.sampling.temperature or 1.0, seq.sampling.top_p
        view = PageView(page_table=table, positions=positions, lengths=lengths)
        return tokens, view, last, seeds, ids, index, temperature, top_p, steps_left

    def _copy(self, copies: list[list[tuple[int, int]]]) -> None:
        """Runs the scheduler's page copies (per shard, (source, destination) in that shard's pages), in one call
        of a power-of-two number a shard."""
        n = max(map(len, copies), default=0)
        if not n:
            return
        width = bucket(n, 1)
        source = np.full((len(copies), width), NULL_PAGE, np.int32)
        destination = source.copy()
        for s, pairs in enumerate(copies):
            if pairs:
                source[s, :len(pairs)], destination[s, :len(pairs)] = zip(*pairs)
        self._kv = self._copier(self._pool(), source.reshape(-1), destination.reshape(-1))
        self.stats["page_copies"] = self.stats.get("page_copies", 0) + sum(map(len, copies))

    def _rows(self, n: int, width: int = 1) -> int:
        """A shard's rows in a call of `width` tokens a row where its busiest shard has n sequences: n rounded up
        (`row_step`), at least min_rows, at most a shard's largest call (its slots rounded up the same way). Where
        padding rows cost their share (`row_step`), a prefill call of fewer than row_step rows takes the next power
        of two instead: each padding row would cost `width` tokens."""
        if self.row_step:
            if width > 1 and n < self.row_step:
                return bucket(n, 1)
            up = lambda m: self.row_step * math.ceil(max(m, 1) / self.row_step)
            return max(n, min(max(up(n), self.min_rows), up(self.shard_slots)))
        return max(n, min(bucket(n, self.min_rows), bucket(self.shard_slots, 1)))

    def _pages_needed(self, tokens: int) -> int:
        return math.ceil(tokens / self.page_size)

    def _run(self, params, works: list[Work], width: int, steps: int, row_steps: list[list[int]]):
        """Runs one call per sampling mode among the rows of every shard (and apart, the rows that ask for top
        log-probs), each `steps` decode steps (1: one pass of `width` tokens); row_steps: per shard, each row's
        own steps (`Scheduler.decode_steps`). Returns, per shard, (sampled tokens [n, steps], log-probs
        [n, steps], per row a list per step of (top ids, top log-probs), or None)."""
        out = [(np.zeros((len(w.rows), steps), np.int32), np.zeros((len(w.rows), steps), np.float32),
                [None] * len(w.rows)) for w in works]
        modes: dict[tuple, list[list[int]]] = {}
        for s, work in enumerate(works):
            for i, (seq, _, _) in enumerate(work.rows):
                key = (seq.sampling.mode, TOP_LOGPROBS if seq.top_logprobs else 0)
                modes.setdefault(key, [[] for _ in works])[s].append(i)
        for (mode, k), index in modes.items():
            parts = [Work([w.rows[i] for i in ix]) for w, ix in zip(works, index)]
            part_steps = [[rs[i] for i in ix] for rs, ix in zip(row_steps, index)]
            for (token, logp, top), ix, (t, lp, ranked) in zip(out, index, self._call(params, parts, width, mode, k,
                                                                                       steps, part_steps)):
                token[ix], logp[ix] = t, lp
                if ranked is not None:
                    for r, i in enumerate(ix):
                        top[i] = [(ids.tolist(), lps.tolist()) for ids, lps in zip(ranked[0][r], ranked[1][r])]
        return out

    def _call(self, params, works: list[Work], width: int, mode: SamplingMode, top: int, steps: int,
              row_steps: list[list[int]]):
        """`steps` device calls of every shard's rows (each shard the same number of rows, `_rows`), dispatched one
        after the other without waiting: step i > 0 takes the tokens step i - 1 sampled where they are (on the
        device) and writes at the next position, and the host reads every step's tokens once at the end. -> per
        shard (tokens [n, steps], log-probs [n, steps], (top ids, top log-probs) [n, steps, top] each, or None)."""
        rows = self._rows(max(len(w.rows) for w in works), width)
        pages = bucket(max(self._pages_needed(first + max(n, s)) for w, rs in zip(works, row_steps)
                           for (_, first, n), s in zip(w.rows, rs)), 1)
        pages = min(pages, self._pages_needed(self.max_cache_length))
        parts = [self._arrays(w, rows, width, pages, rs) for w, rs in zip(works, row_steps)]
        tokens, view, last, seeds, ids, index, temperature, top_p, steps_left = jax.tree.map(
            lambda *a: np.concatenate(a), *parts)
        prepared = self._prepared.get(params) if self.backend.uses_prepared(rows, self.dtype) else None
        program = self._program(rows * len(works), width, pages, mode, top)
        made = []
        for i in range(steps):
            if i:  # a row past its own steps is padding (length 0: written to the null page, its token dropped)
                positions = view.positions + 1
                view = PageView(view.page_table, positions,
                                np.where(i < steps_left, positions[:, 0] + 1, 0).astype(np.int32))
                tokens = made[-1][0][:, None]  # on the device: no wait for the last step
            self._kv, token, logp, *ranked = program(params, prepared, self._pool(), tokens, view, last, seeds, ids,
                                                     index + i, temperature, top_p)
            made.append((token, logp, ranked[0] if ranked else None))
        # the one wait for the device; each output with a step axis after the rows (top: None, or ids and log-probs)
        token, logp, ranked = jax.tree.map(lambda *x: np.stack(x, axis=1), *jax.device_get(made))
        self.stats["calls"] = self.stats.get("calls", 0) + steps
        self.stats["round_trips"] = self.stats.get("round_trips", 0) + 1
        self.stats["row_tokens"] = self.stats.get("row_tokens", 0) + rows * len(works) * width * steps
        out = []
        for s, work in enumerate(works):
            at = slice(s * rows, s * rows + len(work.rows))
            out.append((token[at], logp[at], None if ranked is None else tuple(a[at] for a in ranked)))
        return out

    # ---- continuous use: a scheduler that requests join, one iteration at a time ---------------------

    def new_scheduler(self) -> ShardedScheduler:
        """An empty queue and slot set over this engine's pools, one `Scheduler` a batch shard (one in use at a
        time)."""
        return ShardedScheduler([Scheduler(PageCache(self.num_pages, self.page_size), max_slots=self.shard_slots,
                                           prefill_chunk=self.prefill_chunk, prefill_tokens=self.prefill_tokens,
                                           growth_reserve=self.growth_reserve)
                                 for _ in range(self.shards)])

    def drop_pool(self) -> None:
        """Forgets the page pool's device arrays (made anew by the next call): after a call that failed, as every
        call consumes the pool it is given (donated)."""
        self._kv = None

    def check_request(self, prompt: Seq[int], max_new_tokens: int, name: str = "prompt") -> None:
        """Raises ValueError / PromptTooLongError naming what is wrong with one request."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if len(prompt) == 0:
            raise ValueError(f"{name} is empty")
        need = len(prompt) + max_new_tokens
        if need > self.max_cache_length:
            raise PromptTooLongError(f"{name} has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} it "
                                     f"needs {need} positions, the engine allows {self.max_cache_length}")
        if self._pages_needed(need) > self.num_pages - 1:
            raise PromptTooLongError(f"{name} with max_new_tokens={max_new_tokens} needs {self._pages_needed(need)} "
                                     f"pages of {self.page_size} tokens; the pool holds {self.num_pages - 1}")
        check_prompt_ids([prompt], self.config.vocab_size)

    def step(self, scheduler: ShardedScheduler, params) -> list[Sequence]:
        """One iteration: admit what fits, one prefill call (chunks of admitted prompts), one decode call (one
        step, or `decode_steps`). Returns the sequences that got tokens (a finished one has its finish_reason).
        params: as `generate`'s, already the inference copy when one is used (`inference_weights`)."""
        scheduler.admit()
        self._copy(scheduler.take_copies())
        got, ran = [], False
        for works, width, steps in self._iteration(scheduler):
            row_steps = [[scheduler.decode_steps(seq, steps) if steps > 1 else 1 for seq, _, _ in w.rows]
                         for w in works]
            results = self._run(params, works, width, steps, row_steps)
            scheduler.computed(works)
            for work, own, (token, logp, top) in zip(works, row_steps, results):
                for (seq, first, n), k, t, lp, ranked in zip(work.rows, own, token, logp, top):
                    if first + n != seq.length:  # a prefill chunk short of the context's end: no token yet
                        continue
                    for j in range(k):  # the row's own steps; a sequence that stops ends them
                        if j:
                            if seq.finish_reason is not None:
                                break
                            seq.computed += 1  # step j wrote the token step j - 1 sampled
                        if ranked is not None:
                            ids, lps = ranked[j]
                            seq.top.append((ids[:seq.top_logprobs], lps[:seq.top_logprobs]))
                        scheduler.sampled(seq, int(t[j]), float(lp[j]))
                    got.append(seq)
            ran = True
        if not ran and not scheduler.done:
            raise RuntimeError("the engine made no progress: no admitted sequence and none admissible "
                               f"({len(scheduler.waiting)} waiting, {scheduler.pages_available} pages free)")
        return got

    # ---- Rollout ----------------------------------------------------------------------------------

    def update_params(self, model: Decoder) -> None:
        self.state = nnx.state(model)

    def sample(self, prompt_ids, **kwargs) -> SampleOutput:
        """`generate` with the parameters the engine holds."""
        return self.generate(self.state, prompt_ids, **kwargs)

    def inference_weights(self, params):
        """What the programs decode from: `params`, or their inference copy (`weights_dtype` or a mesh), made
        once per parameter version."""
        return self._inference_weights(params)

    def generate(self, params, prompt_ids: Seq[Seq[int]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_token_ids: Seq[int] = ()
                 ) -> SampleOutput:
        """The `Rollout` protocol. Sequence i draws its tokens from (seed, i, token index): the same samples
        whatever the batch, the pool size or the order of admission."""
        if not prompt_ids:
            return SampleOutput([], [], [])
        for i, p in enumerate(prompt_ids):
            self.check_request(p, max_new_tokens, f"prompt {i}")
        sampling = Sampling(temperature, top_k, top_p, seed, frozenset(int(t) for t in stop_token_ids))
        sampling.mode  # a bad setting fails here, before any work
        scheduler = self.new_scheduler()
        seqs = [Sequence(i, list(map(int, p)), max_new_tokens, sampling) for i, p in enumerate(prompt_ids)]
        for i, seq in enumerate(seqs):  # contiguous blocks a shard: a prompt's copies share their pages
            scheduler.add(seq, i * self.shards // len(seqs))
        self.stats = {"calls": 0, "round_trips": 0, "row_tokens": 0, "page_copies": 0}
        ctx = jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
        with ctx:
            params = self._inference_weights(params)
            while not scheduler.done:
                self.step(scheduler, params)
        self.stats["preemptions"] = scheduler.preemptions
        logprobs = [s.logprobs for s in seqs]
        check_logprobs_not_nan(logprobs)
        return SampleOutput(token_ids=[s.generated for s in seqs], logprobs=logprobs,
                            finish_reasons=[s.finish_reason for s in seqs],
                            decode_steps=max(len(s.generated) for s in seqs))

    def _iteration(self, scheduler: ShardedScheduler):
        """This iteration's calls, each (every shard's work, tokens a row, decode steps): a prefill call (if any
        prompt has chunks left), then a decode call: `decode_steps` steps when nothing was prefilled, else one
        (a prompt being admitted does not wait for several steps)."""
        prefill = scheduler.prefill_work()
        steps = self.decode_steps
        if any(w.rows for w in prefill):
            steps = 1
            for works, width in self._prefill_calls(prefill):
                yield works, width, 1
        decode = scheduler.decode_work(steps)
        if any(w.rows for w in decode):
            yield decode, 1, steps

    def _prefill_width(self, tokens: int) -> int:
        return min(length_bucket(tokens, 16), self.prefill_chunk)

    def _prefill_calls(self, works: list[Work]):
        """The prefill calls of one iteration's chunks, each (every shard's work, tokens a row). A call pads its
        rows to its longest chunk; where padding rows cost their share of the products (`row_step`: one CPU
        device) the chunks go in one call per length bucket, longest first, so the last few tokens of a prompt
        whose full pages are shared (GRPO's G copies) do not ride as a full chunk; elsewhere in one call."""
        if not self.row_step:
            yield works, self._prefill_width(max(w.tokens for w in works))
            return
        widths = {self._prefill_width(n) for w in works for _, _, n in w.rows}
        for width in sorted(widths, reverse=True):
            yield [Work([r for r in w.rows if self._prefill_width(r[2]) == width]) for w in works], width
