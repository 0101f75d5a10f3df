"""How one sampler call prefills its prompts: shape buckets, shared prefixes, and the split into groups.

Pure functions over prompt token ids; `common.sampler` runs the plan. Prefill costs about (batch bucket) x
(padded length) token passes, and where prefill is compute-bound (a CPU, or long prompts anywhere) that is
its time. Padding every prompt to the longest one's bucket wastes passes when lengths differ, and so does
recomputing a prefix (a system prompt, an attack's instructions) that many prompts share. A plan is a list
of groups; each group prefills the prefix its rows share once, then the rows' own rest at the group's own
length bucket. The plan with the fewest token passes wins, every group beyond the first counted with
`GROUP_OVERHEAD` passes on top (one more program call and compiled shape).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence


def bucket(n: int, minimum: int) -> int:
    """Smallest power of two >= max(n, minimum) (batch sizes: they must divide over mesh axes)."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def length_bucket(n: int, minimum: int) -> int:
    """Smallest length >= max(n, minimum) among the powers of two and the midpoints 1.5 x 2^k (16, 24, 32,
    48, 64, 96, ...): at most a third of a prompt is padding instead of half, for twice the shapes.
    Lengths are never split over the mesh, so any of these works on every mesh."""
    n = max(n, minimum, 1)
    power = 1 << math.ceil(math.log2(n))
    return 3 * power // 4 if power >= 4 and 3 * power // 4 >= n else power


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def usable_prefix(common: int, shortest: int, multiple: int) -> int:
    """A shared prefix of `common` tokens as the sampler uses it, leaving the shortest prompt at least one
    token of its own, rounded down to a multiple of 8 or of 1/8 of its power of two if that is larger
    (46 -> 40, 334 -> 320, 1500 -> 1408): prompts under one system prompt then reuse one compiled shape,
    and a run whose prompts vary (GRPO's) meets at most ~8 prefix shapes per doubling; 0 below `multiple`."""
    n = min(common, shortest - 1)
    if n < multiple:
        return 0
    step = max(8, (1 << (n.bit_length() - 1)) // 8)
    return n // step * step


# What one more group costs, in token passes: a quarter of the one-group cost, at most this many (one more
# program call, cache scatter and compiled shape; ~1 s of prefill on one CPU core).
GROUP_OVERHEAD = 512


@dataclasses.dataclass(frozen=True)
class PrefillGroup:
    prefix: int  # tokens every row of the group shares, prefilled once (0: none)
    rest: int  # each row's remaining tokens, left-padded to this length
    rows: tuple[int, ...]  # rows of the call

    @property
    def length(self) -> int:
        return self.prefix + self.rest


def plan_prefill(prompt_ids: Sequence[Sequence[int]], min_prompt_bucket: int = 16,
                 min_batch_bucket: int = 1) -> list[PrefillGroup]:
    """The cheapest split of the prompts into prefill groups (module docstring). Groups are runs of rows
    in two orders: sorted by length (length groups, no prefix) and sorted by content (rows that share a
    prefix are adjacent, and a run shares the smallest common prefix of its neighbours)."""
    n = len(prompt_ids)
    lengths = [len(p) for p in prompt_ids]
    whole = PrefillGroup(0, length_bucket(max(lengths), min_prompt_bucket), tuple(range(n)))
    overhead = min(bucket(n, min_batch_bucket) * whole.rest / 4, GROUP_OVERHEAD)
    best_cost, best_plan = bucket(n, min_batch_bucket) * whole.rest, [whole]
    by_length = sorted(range(n), key=lambda r: lengths[r])
    by_content = sorted(range(n), key=lambda r: tuple(prompt_ids[r]))
    for order, with_prefix in ((by_length, False), (by_content, True)):
        neighbours = [common_prefix(prompt_ids[a], prompt_ids[b]) for a, b in zip(order, order[1:])]
        # cost[j]: cheapest plan for order[:j], whose last group is order[back[j]:j] with this prefix and rest
        cost, back = [0.0] + [math.inf] * n, [(0, 0, 0)] * (n + 1)
        for j in range(1, n + 1):
            common, shortest, longest = math.inf, math.inf, 0
            for i in range(j - 1, -1, -1):
                shortest, longest = min(shortest, lengths[order[i]]), max(longest, lengths[order[i]])
                if i < j - 1:
                    common = min(common, neighbours[i])
                prefix = usable_prefix(common, shortest, min_prompt_bucket) if with_prefix and i < j - 1 else 0
                rest = length_bucket(longest - prefix, min_prompt_bucket)
                total = cost[i] + prefix + bucket(j - i, min_batch_bucket) * rest + overhead
                if total < cost[j]:
                    cost[j], back[j] = total, (i, prefix, rest)
        plan, j = [], n
        while j:
            i, prefix, rest = back[j]
            plan.insert(0, PrefillGroup(prefix, rest, tuple(sorted(order[i:j]))))
            j = i
        if cost[n] - overhead < best_cost:  # the first group carries no overhead
            best_cost, best_plan = cost[n] - overhead, plan
    return best_plan
