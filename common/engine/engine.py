"""The rollout engine: continuous batching over a paged KV cache, as a `Rollout`.

    engine = Engine(model, max_slots=64, page_size=16, num_pages=4096)
    out = engine.generate(nnx.state(model), prompt_ids, max_new_tokens=512, temperature=1.0, seed=0)

Each iteration admits waiting prompts into free slots (bounded by free pages, `common.engine.scheduler`),
runs one prefill call for chunks of newly admitted prompts, then one decode step for every sequence that is
generating; a sequence that stops frees its slot and pages at once, and the next prompt takes them. Decode
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
from common.engine.programs import TOP_LOGPROBS, pass_and_sample
from common.engine.scheduler import Sampling, Scheduler, Sequence, Work
from common.engine.weights import inference_copy
from common.model import Decoder
from common.paged_kv import NULL_PAGE, PagedKV, PageView, pool_bytes
from common.per_version import PerVersion
from common.prefill_plan import bucket, length_bucket
from common.rollout import Rollout, SampleOutput
from common.sampling import SamplingMode, check_logprobs_not_nan
from common.vocab import check_prompt_ids


class PromptTooLongError(ValueError):
    """A prompt with its new-token budget does not fit the model's positions or the page pool."""


DEFAULT_POOL_BYTES = 2**30  # the pool where the device reports no memory (CPU) and none is given
DEVICE_POOL_SHARE = 0.4  # of a device's memory, where it reports its limit and no budget is given


def default_pool_bytes() -> int:
    """The page pool's budget when the caller gives none: DEVICE_POOL_SHARE of the device's memory limit, or
    DEFAULT_POOL_BYTES where the device reports none."""
    limit = device_memory_limit()
    return int(limit * DEVICE_POOL_SHARE) if limit else DEFAULT_POOL_BYTES


def pages_for_budget(config, memory_bytes: int, page_size: int, dtype) -> int:
    """Pages (the null page included) a pool of at most `memory_bytes` holds."""
    return max(2, memory_bytes // pool_bytes(config, 1, page_size, dtype))


class Engine(Rollout):
    """Holds one page pool and the compiled programs for one model.

    max_slots: sequences generating at once (the largest decode batch). page_size: tokens a page. num_pages:
    the pool (page 0 is the null page), or memory_bytes: the pool's budget (`pages_for_budget`), or neither:
    enough for max_slots sequences of max_cache_length tokens, at most `default_pool_bytes()`.
    prefill_chunk: tokens of one prompt per prefill call; prefill_tokens: of all prompts in one prefill call
    (default 4 chunks). min_rows: the smallest row bucket (fewer shapes to compile). row_step: a call's rows
    rounded up to a multiple of this; 0: to a power of two; None (default): min_rows on one CPU device, where
    every padding row costs its share of a step's products and a compile is cheap, else 0 (an accelerator's
    decode step is bound by reading the weights: padding rows cost little, and fewer shapes compile; rows
    must divide over the mesh). weights_dtype: decode from a copy of the parameters in this dtype, laid
    out for inference on the mesh (`common.engine.weights`: split over tensor only, no all-gather of weights
    in a decode step), made once per parameter version; None: the given parameters as they are on one
    device, the copy in their own dtype on a mesh."""

    def __init__(self, model: Decoder, *, mesh: Mesh | None = None, max_slots: int = 64, page_size: int = 16,
                 num_pages: int | None = None, memory_bytes: int | None = None,
                 max_cache_length: int | None = None, prefill_chunk: int = 256, prefill_tokens: int | None = None,
                 min_rows: int = 8, row_step: int | None = None, pad_id: int = 0, weights_dtype=None):
        self.graphdef, self.state = nnx.split(model)
        self.config = model.config
        self.dtype = model.dtype
        self.mesh = mesh
        self.max_slots, self.page_size, self.min_rows, self.pad_id = max_slots, page_size, min_rows, pad_id
        if row_step is None:
            row_step = min_rows if mesh is None and jax.default_backend() == "cpu" else 0
        self.row_step = row_step
        self.max_cache_length = max_cache_length or model.config.max_position_embeddings
        if num_pages is None:
            budget = pages_for_budget(model.config, memory_bytes or default_pool_bytes(), page_size, self.dtype)
            full = 1 + max_slots * math.ceil(self.max_cache_length / page_size)
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
        self.stats: dict[str, int] = {}

    # ---- programs ---------------------------------------------------------------------------------

    @property
    def compile_keys(self) -> list[tuple]:
        return list(self._compiled)

    def _program(self, rows: int, tokens: int, pages: int, mode: SamplingMode, top: int = 0):
        key = (rows, tokens, pages, mode) + ((top,) if top else ())
        if key not in self._compiled:
            graphdef = self.graphdef

            def run(state, prepared, kv, *args):
                return pass_and_sample(nnx.merge(graphdef, state), prepared, kv, *args, mode=mode, top=top)

            self._compiled[key] = jax.jit(run, donate_argnums=(2,))
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
                self._kv = jax.jit(lambda: PagedKV.zeros(self.config, self.num_pages, self.page_size,
                                                         self.dtype))()
        return self._kv

    # ---- one call -----------------------------------------------------------------------------------

    def _arrays(self, work: Work, rows: int, width: int, pages: int):
        """Host arrays of a call: tokens [rows, width], PageView, last [rows], sequence ids, token index."""
        tokens = np.full((rows, width), self.pad_id, np.int32)
        positions = np.zeros((rows, width), np.int32)
        lengths = np.zeros((rows,), np.int32)
        table = np.full((rows, pages), NULL_PAGE, np.int32)
        last = np.zeros((rows,), np.int32)
        ids = np.zeros((rows,), np.int32)
        index = np.zeros((rows,), np.int32)
        for r, (seq, first, n) in enumerate(work.rows):
            tokens[r, :n] = [seq.token(p) for p in range(first, first + n)]
            positions[r] = first + np.arange(width)
            lengths[r] = first + n
            used = self._pages_needed(first + n)
            table[r, :used] = seq.pages[:used]
            last[r], ids[r], index[r] = n - 1, seq.id, len(seq.generated)
        return tokens, PageView(page_table=table, positions=positions, lengths=lengths), last, ids, index

    def _rows(self, n: int) -> int:
        """The rows of a call of n sequences: n rounded up (`row_step`), at least min_rows, at most the
        largest call (max_slots rounded up the same way)."""
        if self.row_step:
            up = lambda m: self.row_step * math.ceil(max(m, 1) / self.row_step)
            return max(n, min(max(up(n), self.min_rows), up(self.max_slots)))
        return max(n, min(bucket(n, self.min_rows), bucket(self.max_slots, 1)))

    def _pages_needed(self, tokens: int) -> int:
        return math.ceil(tokens / self.page_size)

    def _run(self, params, work: Work, width: int):
        """Runs one call per sampling mode among the rows (and apart, the rows that ask for top log-probs);
        returns (sampled tokens [n], log-probs [n], per row (top ids, top log-probs) or None)."""
        token, logp = np.zeros(len(work.rows), np.int32), np.zeros(len(work.rows), np.float32)
        top = [None] * len(work.rows)
        modes = {}
        for i, (seq, _, _) in enumerate(work.rows):
            modes.setdefault((seq.sampling.mode, TOP_LOGPROBS if seq.top_logprobs else 0), []).append(i)
        for (mode, k), index in modes.items():
            part = Work([work.rows[i] for i in index])
            token[index], logp[index], part_top = self._call(params, part, width, mode, k)
            if part_top is not None:
                for r, i in enumerate(index):
                    top[i] = (part_top[0][r].tolist(), part_top[1][r].tolist())
        return token, logp, top

    def _call(self, params, work: Work, width: int, mode: SamplingMode, top: int = 0):
        rows = self._rows(len(work.rows))
        pages = bucket(max(self._pages_needed(first + n) for _, first, n in work.rows), 1)
        pages = min(pages, self._pages_needed(self.max_cache_length))
        tokens, view, last, ids, index = self._arrays(work, rows, width, pages)
        seeds, temperature, top_p = np.zeros(rows, np.int32), np.ones(rows, np.float32), np.ones(rows, np.float32)
        for r, (seq, _, _) in enumerate(work.rows):
            s = seq.sampling
            seeds[r], temperature[r], top_p[r] = s.seed, s.temperature or 1.0, s.top_p
        prepared = self._prepared.get(params) if self.backend.uses_prepared(rows, self.dtype) else None
        self._kv, token, logp, *ranked = self._program(rows, width, pages, mode, top)(
            params, prepared, self._pool(), tokens, view, last, seeds, ids, index, temperature, top_p)
        token, logp, ranked = jax.device_get((token, logp, ranked))
        self.stats["calls"] = self.stats.get("calls", 0) + 1
        self.stats["row_tokens"] = self.stats.get("row_tokens", 0) + rows * width
        n = len(work.rows)
        ranked = tuple(np.asarray(a)[:n] for a in ranked[0]) if ranked else None
        return np.asarray(token)[:n], np.asarray(logp)[:n], ranked

    # ---- continuous use: a scheduler that requests join, one iteration at a time ---------------------

    def new_scheduler(self) -> Scheduler:
        """An empty queue and slot set over this engine's pool (one in use at a time)."""
        return Scheduler(PageCache(self.num_pages, self.page_size), max_slots=self.max_slots,
                         prefill_chunk=self.prefill_chunk, prefill_tokens=self.prefill_tokens)

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

    def step(self, scheduler: Scheduler, params) -> list[Sequence]:
        """One iteration: admit what fits, one prefill call (chunks of admitted prompts), one decode step.
        Returns the sequences that got a token (a finished one has its finish_reason). params: as `generate`'s,
        already the inference copy when one is used (`inference_weights`)."""
        scheduler.admit()
        got, ran = [], False
        for work, width in self._iteration(scheduler):
            token, logp, top = self._run(params, work, width)
            scheduler.computed(work)
            for (seq, first, n), t, lp, ranked in zip(work.rows, token, logp, top):
                if first + n == seq.length:  # the call reached the context's end: a new token
                    if ranked is not None:
                        seq.top.append((ranked[0][:seq.top_logprobs], ranked[1][:seq.top_logprobs]))
                    scheduler.sampled(seq, int(t), float(lp))
                    got.append(seq)
            ran = True
        if not ran and not scheduler.done:
            raise RuntimeError("the engine made no progress: no admitted sequence and none admissible "
                               f"({len(scheduler.waiting)} waiting, {scheduler.pages.available} pages free)")
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
        for seq in seqs:
            scheduler.add(seq)
        self.stats = {"calls": 0, "row_tokens": 0}
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

    def _iteration(self, scheduler: Scheduler):
        """This iteration's calls: a prefill call (if any prompt has chunks left), then a decode step."""
        prefill = scheduler.prefill_work()
        if prefill.rows:
            yield prefill, min(length_bucket(prefill.tokens, 16), self.prefill_chunk)
        decode = scheduler.decode_work()
        if decode.rows:
            yield decode, 1
