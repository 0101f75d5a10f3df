"""Tests of rl_scaling.rewards: answer extraction, reference cleaning, grading, the registry.

Grading runs in worker processes; the real-data checks grade every record of GSM8K test, AIME24,
AMC23 and Minerva (about 3,300 grades, ~15 s on 2 cores).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rl_scaling.rewards import (
    REWARD_FNS,
    GradingPool,
    boxed_spans,
    clean_reference,
    compute_rewards,
    extract_reference_answer,
    get_reward_fn,
    grade,
    grade_batch,
    is_well_formatted,
    last_boxed,
    normalise_answer,
    text_after_think,
)
from rl_scaling.data.loaders import default_data_root

PATHOLOGICAL = "\\boxed{9^{9^{9^{9^{9}}}}}"
DATA_ROOT = default_data_root()
needs_data = pytest.mark.skipif(not DATA_ROOT.is_dir(), reason=f"no math data at {DATA_ROOT}")


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{5}.", "5"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are literal
        ("\\fbox{7}", "7"),
        ("\\boxed {8}", "8"),
        ("\\boxed{\\fbox{3}}", "\\fbox{3}"),  # the outermost box is the answer
        ("no box here", None),
        ("\\boxed{4} and then \\boxed{5", None),  # last box cut off: no answer, not the stale 4
        ("\\boxed{}", ""),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_boxed_spans_positions():
    text = "a \\boxed{1} b \\fbox{{2}}"
    assert boxed_spans(text) == [(2, 11, "1"), (14, 24, "{2}")]
    assert text[14:24] == "\\fbox{{2}}"


def test_text_after_think():
    assert text_after_think("<think>a</think>b</think>c") == "c"
    assert text_after_think("<think>still thinking") == "<think>still thinking"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("She sells 9 eggs.\n#### 18", "18"),
        ("total\n#### 1,000", "1000"),
        ("#### -12,345.5", "-12345.5"),
        ("thus $\\boxed{\\frac{3}{4}}$ cm", "\\frac{3}{4}"),
        (27.0, "27"),
        (0.5, "0.5"),
        (-1.0, "-1"),
        ("025", "025"),
        ("(1,2)", "(1,2)"),  # a tuple keeps its comma
    ],
)
def test_clean_reference(raw, expected):
    assert clean_reference(raw) == expected


@pytest.mark.parametrize(
    "a, b",
    [("1,000", "1000"), ("27.0", "27"), ("025", "25"), ("$\\dfrac{1}{2}$", "\\frac{1}{2}"), ("+3.", "3")],
)
def test_normalise_answer_merges_spellings(a, b):
    assert normalise_answer(a) == normalise_answer(b)


@pytest.mark.parametrize("a, b", [("(1,2)", "12"), ("0.5", "5"), ("-1", "1"), ("10", "100")])
def test_normalise_answer_keeps_different_answers_apart(a, b):
    assert normalise_answer(a) != normalise_answer(b)


def test_extract_reference_answer_per_dataset():
    assert extract_reference_answer({"answer": "x = 3\n#### 72"}, "gsm8k") == "72"
    assert extract_reference_answer({"answer": 36.0}, "amc23") == "36"
    assert extract_reference_answer({"answer": "073"}, "aime24") == "073"
    solution = "first $\\boxed{1}$, finally $x = \\boxed{\\frac{v_{0}}{r_{0}}}$"
    assert extract_reference_answer({"solution": solution}, "minerva_math") == "\\frac{v_{0}}{r_{0}}"


def test_extract_reference_answer_errors_name_the_problem():
    with pytest.raises(KeyError, match=r"'answer'.*fields found: \['question'\]"):
        extract_reference_answer({"question": "q"}, "gsm8k")
    with pytest.raises(KeyError, match="unknown data set 'mmlu'.*gsm8k"):
        extract_reference_answer({"answer": "1"}, "mmlu")
    with pytest.raises(ValueError, match="no \\\\boxed"):
        extract_reference_answer({"solution": "no box"}, "minerva_math")


# ---------------------------------------------------------------- grading


@pytest.mark.parametrize(
    "response, reference",
    [
        ("so \\boxed{\\frac{1}{2}}", "0.5"),
        ("so \\boxed{0.5}", "\\frac{1}{2}"),
        ("so \\boxed{1/2}", "\\frac{1}{2}"),
        ("so \\boxed{27}", 27.0),
        ("so \\boxed{27.0}", "27"),
        ("so \\boxed{1,000}", "Total cost.\n#### 1000"),
        ("so \\boxed{1000}", "Total cost.\n#### 1,000"),
        ("so \\boxed{25}", "025"),
        ("so \\boxed{4.5 \\times 10^{33}}", "4.5e33"),
        ("so \\boxed{(x+1)^2}", "x^2+2x+1"),
        ("so \\boxed{\\sqrt{8}}", "2\\sqrt{2}"),
        ("so \\fbox{9}", "9"),
        ("The final answer is 42.", "42"),  # no box: math-verify on the whole text
    ],
)
def test_equivalent_answers_grade_one(response, reference):
    assert grade(response, reference) == 1.0


@pytest.mark.parametrize(
    "response, reference",
    [
        ("so \\boxed{0.51}", "\\frac{1}{2}"),
        ("so \\boxed{28}", 27.0),
        ("so \\boxed{100}", "#### 1,000"),
        ("so \\boxed{4.6e33}", "4.5e33"),
        ("so \\boxed{(x+1)^3}", "x^2+2x+1"),
        ("so \\boxed{}", "0"),
        ("so \\boxed{7} then \\boxed{8}", "7"),  # the last box counts
        ("The final answer is 41.", "42"),
        ("I give up", "42"),
    ],
)
def test_different_answers_grade_zero(response, reference):
    assert grade(response, reference) == 0.0


def test_think_block_is_ignored():
    assert grade("<think>maybe \\boxed{3}</think> It is \\boxed{4}.", "4") == 1.0
    assert grade("<think>maybe \\boxed{4}</think> It is \\boxed{3}.", "4") == 0.0
    # No box after </think>: the whole-text fallback looks only at the text after it.
    assert grade("<think>\\boxed{4}</think> no idea", "4") == 0.0


def test_grade_batch_matches_order_and_validates_input():
    responses = [f"\\boxed{{{i}}}" for i in range(20)]
    references = [str(i if i % 3 else i + 1) for i in range(20)]
    expected = [0.0 if i % 3 == 0 else 1.0 for i in range(20)]
    assert grade_batch(responses, references) == expected
    assert grade_batch([], []) == []
    with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
        grade_batch(["a", "b"], ["1"])
    with pytest.raises(TypeError, match=r"references\[0\] must be str or a number, got NoneType"):
        grade_batch(["a"], [None])
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        grade("a", "1", timeout_s=0)


# ---------------------------------------------------------------- time bound


@pytest.fixture(scope="module")
def one_worker_pool():
    pool = GradingPool(num_workers=1)
    pool.grade_many(["\\boxed{1}"], ["1"], timeout_s=30)  # warm: the bound then measures grading only
    yield pool
    pool.close()


def test_pathological_answer_times_out_and_pool_recovers(one_worker_pool):
    pool = one_worker_pool
    before = pool.num_timeouts
    start = time.monotonic()
    assert pool.grade_many([PATHOLOGICAL], ["1"], timeout_s=1.0) == [0.0]
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 1.0 + 0.75
    assert pool.num_timeouts == before + 1
    # The only worker was killed: this batch is graded by its fresh successor.
    assert pool.grade_many(["\\boxed{\\frac{1}{2}}", "\\boxed{3}"], ["0.5", "4"], timeout_s=30) == [1.0, 0.0]


def test_pathological_answer_times_out_off_the_main_thread():
    grade("\\boxed{1}", "1")  # warm the default pool
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(grade(PATHOLOGICAL, "1", timeout_s=1.0)))
    start = time.monotonic()
    thread.start()
    thread.join(timeout=30)
    assert result == [0.0]
    assert time.monotonic() - start < 1.0 + 0.75
    assert grade("\\boxed{2}", "2") == 1.0


def test_batch_grades_in_parallel_past_timeouts():
    pool = GradingPool(num_workers=2)
    try:
        pool.grade_many(["\\boxed{1}", "\\boxed{1}"], ["1", "1"], timeout_s=30)
        start = time.monotonic()
        scores = pool.grade_many([PATHOLOGICAL, PATHOLOGICAL], ["1", "1"], timeout_s=1.0)
        elapsed = time.monotonic() - start
        assert scores == [0.0, 0.0]
        assert elapsed < 1.0 + 0.75  # both bounds ran at once, not one after the other
        assert pool.num_timeouts == 2
        assert pool.grade_many(["\\boxed{5}", "\\boxed{6}", "x"], ["5", "5", "5"], timeout_s=30) == [1.0, 0.0, 0.0]
    finally:
        pool.close()


# ---------------------------------------------------------------- real data

_SETS = {  # name: (file, raw reference field)
    "gsm8k": ("gsm8k/test.jsonl", "answer"),
    "aime24": ("aime24/test.jsonl", "answer"),
    "amc23": ("amc23/test.jsonl", "answer"),
    "minerva_math": ("minerva_math/test.jsonl", "solution"),
}
_EXPECTED_COUNTS = {"gsm8k": 1319, "aime24": 30, "amc23": 40, "minerva_math": 272}


def _records(name: str) -> list[dict]:
    with open(Path(DATA_ROOT) / _SETS[name][0], encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _model_spelling(answer: str) -> str:
    """How a model would likely write the answer, differently from the data set where possible."""
    if re.fullmatch(r"\d{4,}", answer):
        return f"{int(answer):,}"  # 1000 -> 1,000
    if re.fullmatch(r"0\d+", answer):
        return str(int(answer))  # AIME 025 -> 25
    sci = re.fullmatch(r"([-+]?[\d.]+)[eE]([-+]?\d+)", answer)
    if sci:
        return f"{sci.group(1)} \\times 10^{{{int(sci.group(2))}}}"  # 4.5e33 -> 4.5 \times 10^{33}
    return answer


def _perturbed(answer: str) -> str:
    """A clearly wrong answer: integer + 1; other numbers 2x + 1; expressions get `+ 1`."""
    plain = answer.replace(",", "") if re.fullmatch(r"-?[\d,]+", answer) else answer
    if re.fullmatch(r"[-+]?\d+", plain):
        return str(int(plain) + 1)
    try:
        return repr(2 * float(plain) + 1)
    except ValueError:
        return f"{answer} + 1"


@needs_data
@pytest.mark.parametrize("name", list(_SETS))
def test_every_real_reference_grades_one_and_perturbations_zero(name):
    records = _records(name)
    assert len(records) == _EXPECTED_COUNTS[name]
    raw = [r[_SETS[name][1]] for r in records]
    answers = [extract_reference_answer(r, name) for r in records]
    right = [f"Step by step... so the answer is $\\boxed{{{_model_spelling(a)}}}$." for a in answers]
    wrong = [f"Step by step... so the answer is $\\boxed{{{_perturbed(a)}}}$." for a in answers]
    scores = grade_batch(right + wrong, raw + raw)
    failed_right = [(a, s) for a, s in zip(answers, scores[: len(raw)]) if s != 1.0]
    failed_wrong = [(a, s) for a, s in zip(answers, scores[len(raw) :]) if s != 0.0]
    assert not failed_right, failed_right[:5]
    assert not failed_wrong, failed_wrong[:5]


@needs_data
def test_gsm8k_reference_field_is_hand_checked():
    records = _records("gsm8k")
    assert records[0]["answer"].endswith("#### 18")  # Janet's ducks: (16 - 3 - 4) * 2
    assert extract_reference_answer(records[0], "gsm8k") == "18"
    amc = _records("amc23")
    assert amc[0]["answer"] == 27.0 and grade("\\boxed{27}", amc[0]["answer"]) == 1.0


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "response, expected",
    [
        ("We add 2 and 2, so \\boxed{4}.", True),
        ("<think>2 + 2 = 4</think>\\boxed{4}", True),  # reasoning in the think block
        ("\\boxed{4}", False),  # no reasoning before the box
        ("So \\boxed{4} or \\boxed{5}.", False),  # two final boxes
        ("So \\boxed{4} or maybe \\boxed{5", False),  # a second, cut-off box
        ("So \\boxed{ }.", False),  # empty answer
        ("So the answer is 4.", False),  # no box
        ("<think>\\boxed{3}</think> so \\boxed{4}", True),  # boxes while thinking do not count
        ("So \\boxed{\\fbox{4}}.", True),  # a nested box is one answer
    ],
)
def test_format_reward(response, expected):
    assert is_well_formatted(response) is expected


def test_registry_and_weighted_sum():
    assert set(REWARD_FNS) == {"correctness", "format"}
    assert get_reward_fn("format") is REWARD_FNS["format"]
    with pytest.raises(KeyError, match=r"unknown reward function 'lenght'; known: \['correctness', 'format'\]"):
        get_reward_fn("lenght")
    responses = ["Thus \\boxed{4}.", "\\boxed{4}", "Thus \\boxed{5}.", "no answer"]
    references = ["4", "4", "4", "4"]
    # correctness: 1, 1, 0, 0; format: 1, 0, 1, 0
    rewards = compute_rewards(responses, references, {"correctness": 1.0, "format": 0.25})
    assert rewards.dtype == np.float32 and rewards.shape == (4,)
    np.testing.assert_allclose(rewards, [1.25, 1.0, 0.25, 0.0])
    with pytest.raises(ValueError, match="differ in length"):
        compute_rewards(["a"], [], {"format": 1.0})
    with pytest.raises(ValueError, match="not finite"):
        compute_rewards(["a"], ["1"], {"format": float("nan")})
