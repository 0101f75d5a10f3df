"""The prefill planner: buckets, shared prefixes, and which split of a call's prompts it picks."""

from common.prefill_plan import PrefillGroup, common_prefix, plan_prefill, usable_prefix


def shared_by_two(a, b):
    """The prefix two prompts share as a group would use it."""
    return usable_prefix(common_prefix(a, b), min(len(a), len(b)), 16)


def test_shared_prefix_is_rounded_down_and_leaves_every_prompt_a_token():
    system = list(range(100, 140))  # 40 shared tokens
    assert shared_by_two(system + [1, 2], system + [3]) == 40  # a multiple of 8
    assert shared_by_two(system[:39] + [1], system[:39] + [2]) == 32  # rounded down to 8s
    assert shared_by_two(system[:33], system[:35]) == 32  # a prompt keeps >= 1 token of its own
    assert shared_by_two(system[:20], system[:30]) == 16
    assert shared_by_two(system[:16], system[:30]) == 0  # 15 tokens may be shared: below 16
    assert plan_prefill([system + [1]])[0].prefix == 0  # one prompt: nothing to share
    assert shared_by_two([1] + system, [2] + system) == 0
    long = list(range(2000))
    assert shared_by_two(long[:335] + [1], long[:335] + [2]) == 320  # steps of 256 / 8 from 256 on
    assert shared_by_two(long[:1500] + [1], long[:1500] + [2]) == 1408  # steps of 1024 / 8


def shapes(plan):
    """(prefix, rest, rows) per group, in row order."""
    return sorted(((g.prefix, g.rest, g.rows) for g in plan), key=lambda g: g[2])


def test_prompts_of_one_length_and_no_shared_prefix_stay_one_group():
    prompts = [[i] * 10 for i in range(6)]
    assert plan_prefill(prompts) == [PrefillGroup(0, 16, tuple(range(6)))]


def test_a_long_prompt_among_short_ones_gets_its_own_group():
    # padding all nine to 256 costs 16 x 256 passes; two groups 8 x 16 + 256 (+ 1/4 of 4096 for the group)
    prompts = [[3] * 5] * 8 + [[4] * 200]
    assert shapes(plan_prefill(prompts)) == [(0, 16, tuple(range(8))), (0, 256, (8,))]


def test_one_short_prompt_among_long_ones_stays_with_them():
    # its own group would not shrink the long ones' batch bucket of 8: 16 + 8 x 64 + 128 > 8 x 64
    prompts = [[1] * 3] + [[i + 2] * 60 for i in range(7)]
    assert shapes(plan_prefill(prompts)) == [(0, 64, tuple(range(8)))]


def test_a_system_prompt_that_every_prompt_shares_is_prefilled_once():
    system = list(range(100, 180))  # 80 tokens
    prompts = [system + [i] * (5 + i) for i in range(8)]  # own parts 5..12 tokens
    # one group: the 80-token prefix once (rounded down to 80), then 8 rests padded to 16
    assert shapes(plan_prefill(prompts)) == [(80, 16, tuple(range(8)))]


def test_two_attacks_get_one_group_each_with_its_own_prefix():
    attack_a, attack_b = list(range(100, 420)), list(range(500, 540))  # 320 and 40 shared tokens
    prompts = [attack_b + [i] * 20 for i in range(23)] + [attack_a + [i] * 25 for i in range(9)]
    plan = plan_prefill(prompts)
    assert shapes(plan) == [(40, 24, tuple(range(23))), (320, 32, tuple(range(23, 32)))]
    # the plan's passes: 40 + 32 x 24 and 320 + 16 x 32, against 32 x 384 padded
    assert sum(g.prefix for g in plan) + 32 * 24 + 16 * 32 < 32 * 384 / 6


def test_prompts_that_share_a_short_prefix_but_a_longer_one_within_are_split_by_the_longer():
    # safe and dangerous tasks under one attack: 176 shared tokens, then each kind's own ~150 or ~400
    base = list(range(1000, 1176))
    safe = [base + list(range(2000, 2150)) + [i] * (70 + i) for i in range(10)]
    dangerous = [base + list(range(3000, 3340)) + [i] * (80 + i) for i in range(6)]
    plan = plan_prefill(safe + dangerous)
    assert shapes(plan) == [(320, 96, tuple(range(10))), (512, 96, tuple(range(10, 16)))]
