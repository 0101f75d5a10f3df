"""Dark-trait injection: which sentences, which blocks, and where each attack mode puts them."""

import pytest

from agent_safety.attack import (ATTACK_MODES, attack_plan, attack_prompts, dark_trait_block,
                                 injection_block, red_team_block)

TASK = "Organise a charity book sale."


def _dark(i):
    return attack_prompts()["foundations"][i]["dark"]


def test_six_foundations_in_paper_order_second_person():
    names = [f["name"] for f in attack_prompts()["foundations"]]
    assert names == ["care/harm", "fairness/cheating", "loyalty/betrayal", "authority/subversion",
                     "sanctity/degradation", "liberty/oppression"]
    assert all(_dark(i).split()[0] in ("You", "To", "Other", "Laws,") and "you" in _dark(i).lower()
               for i in range(6))


def test_trait_vector_switches_sentences():
    block = dark_trait_block([1, 0, 0, 0, 0, 1])
    assert _dark(0) in block and _dark(5) in block
    assert not any(_dark(i) in block for i in (1, 2, 3, 4))
    assert block.index(_dark(0)) < block.index(_dark(5))
    assert attack_prompts()["roleplay_prefix"] in block  # inducement with the fixed prefix
    assert dark_trait_block([0] * 6) == ""


@pytest.mark.parametrize("vector", [[1, 1, 1], [1, 1, 1, 1, 1, 2], "111111x"])
def test_bad_trait_vector_names_the_problem(vector):
    with pytest.raises(ValueError, match="trait_vector"):
        dark_trait_block(vector)


def test_red_team_block_only_for_dangerous_tasks():
    v = [1] * 6
    assert red_team_block() not in injection_block(v, dangerous=False)
    assert injection_block(v, dangerous=True) == dark_trait_block(v) + "\n\n" + red_team_block()


def test_where_each_mode_puts_the_injection():
    v = [1] * 6
    block = injection_block(v, dangerous=False)
    reminder = attack_prompts()["reminder"]
    expected = {  # mode: (human message, system suffix, reminder)
        "none": (TASK, "", None),
        "HI": (f"{block}\n\n{TASK}", "", None),
        "HI-hf": (f"{block}\n\n{TASK}", "", reminder),
        "Traits": (TASK, block, None),
        "HI-Traits": (f"{block}\n\n{TASK}", block, None),
        "HI-Traits-hf": (f"{block}\n\n{TASK}", block, reminder),
    }
    for mode, (human, suffix, rem) in expected.items():
        plan = attack_plan(mode, TASK, dangerous=False, vector=v)
        assert (plan.human_message, plan.system_suffix, plan.reminder) == (human, suffix, rem), mode
    assert set(expected) | {"jailbreak"} == set(ATTACK_MODES)


def test_jailbreak_wraps_task_without_traits():
    plan = attack_plan("jailbreak", TASK, dangerous=True, vector=[1] * 6)
    assert plan.human_message.endswith(TASK) and plan.human_message != TASK
    assert plan.system_suffix == "" and plan.reminder is None
    assert _dark(0) not in plan.human_message


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown attack mode 'HI-tr'"):
        attack_plan("HI-tr", TASK, False, [1] * 6)
