"""Continuous batching on the host: which sequences run, which tokens of theirs each device call computes,
and which pages hold them. Pure Python over `PageCache`; the engine (`common.engine.engine`) runs the calls.

A sequence's context is its prompt then its generated tokens; `computed` of them have keys and values in
its pages. Each call computes the rest of some sequences' context (a prefill chunk: many tokens; a decode
step: the one token sampled last) and samples the next token from the last one it computed. A sequence
that is admitted takes a slot and the pages of its prompt (full pages another prompt already filled are
shared, `PageCache.match`; the partial last page is copied from a running sequence with the same prompt that
computed it, so GRPO's copies start decoding at once), while pages for the expected growth of those running stay
free (`growth_reserve`); decoding takes a new page each `page_size` tokens; when none is left the most recently
admitted sequence is preempted: its pages are released (its full ones stay cached, like a prompt's) and it waits
at the head of the queue, to be recomputed later from its context but for the cached pages it still matches (its
samples do not change: their keys depend on the sequence and the token index only). So any number of prompts runs
in a fixed pool and never runs out of memory.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from common.engine.pages import OutOfPages, PageCache, page_keys, tokens_key
from common.sampling import SamplingMode


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How a sequence samples. temperature 0: greedy; top_k 0 / top_p 1: no filter. stop_ids: generation ends
    after one of them. seed: with the sequence's id and the token's index, the token's random key."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop_ids: frozenset = frozenset()

    @property
    def mode(self) -> SamplingMode:
        """The static part (the compiled program's)."""
        return SamplingMode.from_params(self.temperature, self.top_k, self.top_p)


@dataclasses.dataclass(eq=False)
class Sequence:
    """One prompt's generation. id: its random stream (with sampling.seed)."""

    id: int
    prompt: list[int]
    max_new_tokens: int
    sampling: Sampling = Sampling()
    generated: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    pages: list[int] = dataclasses.field(default_factory=list)
    computed: int = 0  # context tokens whose keys and values are in `pages`
    finish_reason: str | None = None  # "stop" | "length" once done
    prompt_keys: list[bytes] = dataclasses.field(default_factory=list)  # of the prompt's full pages
    prompt_key: bytes = b""  # of the whole prompt (`Scheduler.tail_donors`)
    context_keys: list[bytes] = dataclasses.field(default_factory=list)  # of its context's full pages when preempted
    top_logprobs: int = 0  # how many most likely tokens to report each step (at most programs.TOP_LOGPROBS)
    top: list[tuple[list[int], list[float]]] = dataclasses.field(default_factory=list)  # per token: (ids, log-probs)
    shard: int = 0  # the batch shard whose pages it uses (`ShardedScheduler`)

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.generated)

    def token(self, position: int) -> int:
        n = len(self.prompt)
        return self.prompt[position] if position < n else self.generated[position - n]

    @property
    def tokens_left(self) -> int:
        """New tokens its budget still allows."""
        return self.max_new_tokens - len(self.generated)

    @property
    def pending(self) -> int:
        """Context tokens still to compute (1 when decoding: the token sampled last)."""
        return self.length - self.computed


@dataclasses.dataclass
class Work:
    """One device call: rows (sequence, first position, token count)."""

    rows: list[tuple[Sequence, int, int]]

    @property
    def tokens(self) -> int:
        return max((n for _, _, n in self.rows), default=0)


class Scheduler:
    """Slots, queue and pages. max_slots: sequences admitted at once (the decode batch). prefill_chunk: the
    most tokens of one sequence a prefill call computes; prefill_tokens: of all its rows together, so a long
    prompt does not stall the decoders for long. growth_reserve: a sequence is admitted only while the free pages
    also hold this share of every running sequence's remaining token budget and of its own (beyond the pages
    they hold), so that sequences admitted while short do not outgrow the pool and preempt each other as they
    lengthen (each preemption recomputes a context); 0: admitted while its prompt's pages are free. The first
    sequence is always admitted when its prompt fits."""

    def __init__(self, pages: PageCache, *, max_slots: int, prefill_chunk: int, prefill_tokens: int,
                 growth_reserve: float = 0.0):
        self.pages = pages
        self.growth_reserve = growth_reserve
        self.max_slots = max_slots
        self.prefill_chunk = prefill_chunk
        self.prefill_tokens = max(prefill_tokens, prefill_chunk)
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []  # in admission order
        self.preemptions = 0
        # per prompt (its key), a running sequence whose pages hold that prompt's keys and values but for its last
        # token: a new sequence with the same prompt copies its partial last page instead of prefilling it
        self.tail_donors: dict[bytes, Sequence] = {}
        self.copies: list[tuple[int, int]] = []  # (source page, destination page) to copy before the next call

    @property
    def page_size(self) -> int:
        return self.pages.page_size

    def pages_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.page_size)

    def add(self, seq: Sequence) -> None:
        seq.prompt_keys = page_keys(seq.prompt, self.page_size)
        seq.prompt_key = tokens_key(seq.prompt)
        self.waiting.append(seq)

    @property
    def done(self) -> bool:
        return not self.waiting and not self.running

    # ---- admission ------------------------------------------------------------------------------

    def admit(self) -> None:
        """Admit waiting sequences, in order, while slots and pages last; one whose shared pages are still
        being prefilled is passed over until they are ready."""
        passed = []
        # pages the running sequences are expected to take yet (`growth_reserve`): summed once, grown by each admission
        reserved = sum(self._growth(s, len(s.pages)) for s in self.running) if self.growth_reserve else 0
        while self.waiting and len(self.running) < self.max_slots:
            seq = self.waiting.popleft()
            growth = self._growth(seq, self.pages_for(seq.length)) if self.growth_reserve else 0
            if self._try_admit(seq, keep=reserved + growth if self.running else 0):
                reserved += growth
            else:
                passed.append(seq)
                if self.pages.available == 0:
                    break
        self.waiting.extendleft(reversed(passed))

    def _try_admit(self, seq: Sequence, keep: int) -> bool:
        """Admits a sequence if its prompt's pages are free with `keep` more to spare."""
        keys = seq.context_keys if seq.generated and seq.context_keys else seq.prompt_keys
        shareable = min(len(keys), (seq.length - 1) // self.page_size)  # compute >= 1 token
        matched, ready = self.pages.match(keys[:shareable])
        need = self.pages_for(seq.length) - len(matched)
        if not ready or need + keep > self.pages.available:
            self.pages.release(matched)
            return False
        donor = self._tail_donor(seq, len(matched)) if len(matched) == shareable else None
        seq.pages = matched + self.pages.allocate(need)
        seq.computed = len(matched) * self.page_size
        if donor is not None:  # the tail's keys and values but for the last token's: that one computes as a decode
            self.copies.append((donor.pages[len(matched)], seq.pages[len(matched)]))
            seq.computed = seq.length - 1
        for i in range(len(matched), len(seq.prompt_keys)):
            self.pages.publish(seq.pages[i], seq.prompt_keys[i])
        self.running.append(seq)
        return True

    def _tail_donor(self, seq: Sequence, shared: int) -> Sequence | None:
        """A running sequence whose page `shared` (the one after the `shared` full pages seq matched) holds seq's
        prompt tail but for its last token, when seq is a fresh prompt with more than that token left to compute."""
        if seq.generated or seq.length - shared * self.page_size < 2:
            return None
        donor = self.tail_donors.get(seq.prompt_key)
        if donor is None or donor is seq or len(donor.pages) <= shared or donor.computed < len(seq.prompt) - 1:
            return None
        return donor

    def take_copies(self) -> list[tuple[int, int]]:
        """The page copies admission asked for (source, destination), to run before the next call; cleared."""
        copies, self.copies = self.copies, []
        return copies

    def _growth(self, seq: Sequence, held: int) -> int:
        """Pages a sequence holding `held` is expected to take yet: for `growth_reserve` of its remaining budget."""
        return max(0, self.pages_for(seq.length + math.ceil(self.growth_reserve * seq.tokens_left)) - held)

    # ---- one iteration's calls ------------------------------------------------------------------

    def prefill_work(self) -> Work:
        """Chunks of the admitted sequences that have more than one token to compute (their pages are
        already taken at admission)."""
        rows, budget = [], self.prefill_tokens
        for seq in self.running:
            if seq.pending > 1 and budget > 0:
                n = min(seq.pending, self.prefill_chunk, budget)
                rows.append((seq, seq.computed, n))
                budget -= n
        return Work(rows)

    def decode_work(self, steps: int = 1) -> Work:
        """One token for every sequence whose context is computed but for its last token, each with the page
        that token needs (preempting the most recently admitted sequences when none is left), and with steps > 1
        the pages of up to steps - 1 tokens more (`decode_steps`: taken only while free pages last)."""
        rows = []
        for seq in list(self.running):
            if seq not in self.running or seq.pending != 1:
                continue
            while len(seq.pages) < self.pages_for(seq.length):
                try:
                    seq.pages += self.pages.allocate(1)
                except OutOfPages:
                    victim = self.running[-1]
                    self.preempt(victim)
                    if victim is seq:
                        break
            if seq in self.running:
                ahead = self.pages_for(seq.length - 1 + min(steps, seq.tokens_left))
                if ahead > len(seq.pages) and self.pages.available >= ahead - len(seq.pages):
                    seq.pages += self.pages.allocate(ahead - len(seq.pages))
                rows.append((seq, seq.computed, 1))
        return Work([r for r in rows if r[0] in self.running])

    def decode_steps(self, seq: Sequence, steps: int) -> int:
        """How many of a decode call's `steps` are a sequence's own: its new-token budget allows them and its
        pages hold their positions (the step at position p writes there)."""
        return max(0, min(steps, seq.tokens_left, len(seq.pages) * self.page_size - seq.length + 1))

    def cancel(self, seq: Sequence) -> None:
        """Drop a sequence wherever it is (a client went away), releasing its pages."""
        if seq in self.running:
            self.running.remove(seq)
            self._forget_donor(seq)
            self.pages.release(seq.pages)
            seq.pages = []
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.finish_reason = seq.finish_reason or "cancelled"

    def preempt(self, seq: Sequence) -> None:
        """Release a running sequence's pages; it waits first in line, to be recomputed from its context. Its full
        pages past the prompt's are cached under their keys first, like a prompt's: readmitted, it matches those
        not reclaimed by then (released last, they are reclaimed last) and recomputes only the rest."""
        self.running.remove(seq)
        self._forget_donor(seq)
        full, prompt_pages = seq.computed // self.page_size, len(seq.prompt_keys)
        if full > prompt_pages:
            tokens = [seq.token(p) for p in range(prompt_pages * self.page_size, full * self.page_size)]
            seq.context_keys = seq.prompt_keys + page_keys(tokens, self.page_size,
                                                           seq.prompt_keys[-1] if prompt_pages else b"")
            for i in range(prompt_pages, full):
                self.pages.publish(seq.pages[i], seq.context_keys[i])
                self.pages.ready(seq.pages[i])
        self.pages.release(seq.pages)
        seq.pages, seq.computed = [], 0
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def _forget_donor(self, seq: Sequence) -> None:
        if self.tail_donors.get(seq.prompt_key) is seq:
            del self.tail_donors[seq.prompt_key]

    def computed(self, work: Work) -> None:
        """The call ran: its tokens' keys and values are in their pages (pages of a prompt they completed
        become shareable)."""
        for seq, first, n in work.rows:
            seq.computed = first + n
            for i in range(min(len(seq.prompt_keys), seq.computed // self.page_size)):
                self.pages.ready(seq.pages[i])
            if seq.prompt_key not in self.tail_donors and seq.computed >= len(seq.prompt) - 1:
                self.tail_donors[seq.prompt_key] = seq

    def sampled(self, seq: Sequence, token: int, logprob: float) -> None:
        """Append a token sampled after the sequence's last computed one; retire it when it stops or reaches
        its budget (its pages are released)."""
        seq.generated.append(token)
        seq.logprobs.append(logprob)
        if token in seq.sampling.stop_ids:
            seq.finish_reason = "stop"
        elif len(seq.generated) >= seq.max_new_tokens:
            seq.finish_reason = "length"
        if seq.finish_reason is not None:
            self.running.remove(seq)
            self._forget_donor(seq)
            self.pages.release(seq.pages)
            seq.pages = []


class ShardedScheduler:
    """One `Scheduler` per batch shard of a mesh, each over its shard's own page pool (`common.paged_kv`): a
    sequence lives on one shard, its pages in that shard's pool, and each device call computes every shard's
    work side by side. A sequence added without a shard goes to the one with the fewest sequences (`add`);
    `generate` places a batch in contiguous blocks, so a prompt's copies (GRPO's G samples) share their pages;
    `balance` moves waiting sequences to shards with free slots."""

    def __init__(self, shards: list[Scheduler]):
        self.shards = shards

    def add(self, seq: Sequence, shard: int | None = None) -> None:
        if shard is None:
            shard = min(range(len(self.shards)),
                        key=lambda s: len(self.shards[s].running) + len(self.shards[s].waiting))
        seq.shard = shard
        self.shards[shard].add(seq)

    @property
    def done(self) -> bool:
        return all(s.done for s in self.shards)

    @property
    def preemptions(self) -> int:
        return sum(s.preemptions for s in self.shards)

    @property
    def waiting(self) -> list[Sequence]:
        return [seq for s in self.shards for seq in s.waiting]

    @property
    def pages_available(self) -> int:
        return sum(s.pages.available for s in self.shards)

    @property
    def pages_in_use(self) -> int:
        return sum(s.pages.in_use for s in self.shards)

    def admit(self) -> None:
        self.balance()
        for s in self.shards:
            s.admit()

    def balance(self) -> None:
        """A shard with free slots and an empty queue takes waiting sequences from the back of the queue of a
        shard that cannot admit them now (a waiting sequence holds no pages, and its samples do not depend on its
        shard), so a shard whose sequences ended early does not idle while another has a backlog."""
        for shard, s in enumerate(self.shards):
            while len(s.running) + len(s.waiting) < s.max_slots:
                donor = max(self.shards, key=lambda d: len(d.waiting) - (d.max_slots - len(d.running)))
                if len(donor.waiting) <= donor.max_slots - len(donor.running):
                    return
                seq = donor.waiting.pop()
                seq.shard = shard
                s.waiting.append(seq)

    def prefill_work(self) -> list[Work]:
        return [s.prefill_work() for s in self.shards]

    def decode_work(self, steps: int = 1) -> list[Work]:
        return [s.decode_work(steps) for s in self.shards]

    def decode_steps(self, seq: Sequence, steps: int) -> int:
        return self.shards[seq.shard].decode_steps(seq, steps)

    def take_copies(self) -> list[list[tuple[int, int]]]:
        return [s.take_copies() for s in self.shards]

    def computed(self, works: list[Work]) -> None:
        for s, work in zip(self.shards, works):
            s.computed(work)

    def sampled(self, seq: Sequence, token: int, logprob: float) -> None:
        self.shards[seq.shard].sampled(seq, token, logprob)

    def cancel(self, seq: Sequence) -> None:
        self.shards[seq.shard].cancel(seq)
