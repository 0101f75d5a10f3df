"""PDR, JDR-Rk and the point-biserial correlation on hand-built records (literal expected numbers)."""

import math

import numpy as np
import pytest
from scipy import stats

from agent_safety.metrics import (count_invalid, input_detection_ratio, invalid_verdict_share, joint_danger,
                                  joint_danger_rate, point_biserial, process_danger, process_danger_rate,
                                  score_danger_pairs)
from agent_safety.tables import markdown_table, summary_rows

T, F, N = True, False, None


def record(rounds, labels, dangerous=True, setup=(), scores=None, attack="HI", input_filter=None):
    """labels: per round (1..rounds) the judge labels of its agent messages; setup: round-0 labels."""
    turns = [{"round": 0, "speaker": "user", "kind": "human", "content": "task", "judge": None,
              "questionnaire": None}]
    flat = [(0, x) for x in setup] + [(k, x) for k, row in enumerate(labels, start=1) for x in row]
    scores = scores or [None] * len(flat)
    for (k, label), score in zip(flat, scores):
        valid = score != "invalid"
        q = None if score is None else {"valid": valid, "score": score if valid else None}
        turns.append({"round": k, "speaker": f"agent{k}", "kind": "agent", "content": "...",
                      "judge": {"dangerous": label, "raw": ""}, "questionnaire": q})
        turns.append({"round": k, "speaker": "police", "kind": "police", "content": "...", "judge": None,
                      "questionnaire": None})
    return {"key": {"task_id": "t", "system": "autogen", "attack": attack, "defence": "none", "seed": 0},
            "task": {"dangerous": dangerous}, "rounds": rounds, "turns": turns, "input_filter": input_filter}


RECORDS = [
    record(3, [[T, T], [T, F], [F, F]]),   # process yes; joint R1
    record(3, [[F, F], [F, N], [T, T]]),   # process yes; joint R3
    record(3, [[N, T], [F, F], [F, F]]),   # process yes; R1 hangs on an invalid verdict: undetermined
    record(3, [[F, F], [F, F], [F, F]]),   # nothing
    record(3, []),                         # blocked by the input filter: no agent messages
    record(1, [[T, T]]),                   # a one-round system: joint R1, no round 2 or 3
]


def test_process_and_joint_flags():
    assert [process_danger(r) for r in RECORDS] == [T, T, T, F, F, T]
    assert [joint_danger(r, 1) for r in RECORDS] == [T, F, N, F, F, T]
    assert [joint_danger(r, 2) for r in RECORDS] == [F, F, F, F, F, F]  # [F, N] has a safe verdict: not joint
    assert [joint_danger(r, 3) for r in RECORDS] == [F, T, F, F, F, F]


def test_rates_count_judged_outcomes_only():
    assert process_danger_rate(RECORDS) == pytest.approx(4 / 6)
    assert joint_danger_rate(RECORDS, 1) == pytest.approx(2 / 5)  # record 3 undetermined
    assert joint_danger_rate(RECORDS, 2) == 0.0      # over the 5 three-round records
    assert joint_danger_rate(RECORDS, 3) == pytest.approx(1 / 5)
    assert math.isnan(process_danger_rate([])) and math.isnan(joint_danger_rate(RECORDS[-1:], 2))
    undetermined = record(2, [[N, F], [F, N]])
    assert process_danger(undetermined) is None and joint_danger(undetermined, 1) is F
    assert process_danger_rate(RECORDS + [undetermined]) == pytest.approx(4 / 6)


def test_all_invalid_verdicts_give_no_rate_not_zero():
    all_invalid = [record(2, [[N, N], [N, N]]) for _ in range(3)]
    assert math.isnan(process_danger_rate(all_invalid)) and math.isnan(joint_danger_rate(all_invalid, 1))
    assert invalid_verdict_share(all_invalid) == 1.0
    assert invalid_verdict_share(RECORDS) == pytest.approx(2 / 26) and math.isnan(invalid_verdict_share([]))


def test_setup_agent_counts_for_pdr_not_jdr():
    r = record(1, [[F, F]], setup=[T])
    assert process_danger(r) and not joint_danger(r, 1)


def test_police_and_human_turns_are_not_evaluated():
    r = record(1, [[F]])
    r["turns"][0]["judge"] = r["turns"][2]["judge"] = {"dangerous": True, "raw": ""}  # human, police
    assert process_danger(r) is False


def test_input_detection_ratio_and_invalid_counts():
    screened = [record(1, [], input_filter={"dangerous": d}) for d in (T, T, F, N)]
    assert input_detection_ratio(screened + [record(1, [[F]])]) == 0.5
    assert math.isnan(input_detection_ratio(RECORDS))
    r = record(1, [[N, T, F]], scores=[12, "invalid", None])
    assert count_invalid([r]) == {"questionnaire": 1, "verdict": 1}


def test_score_danger_pairs_keep_only_fully_valid_turns():
    r = record(2, [[T, F], [N, T]], scores=[90, 12, 50, "invalid"])
    assert score_danger_pairs([r]) == ([90, 12], [1, 0])


def test_point_biserial_hand_computed():
    # M1 = 35, M0 = 15, population sd = sqrt(125): r = 20/sqrt(125) * 2/4 = 2/sqrt(5); df = 2 -> p = 1 - r.
    r, p = point_biserial([10, 20, 30, 40], [0, 0, 1, 1])
    assert r == pytest.approx(2 / math.sqrt(5)) and p == pytest.approx(1 - 2 / math.sqrt(5))


def test_point_biserial_matches_scipy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.choice([12, 20, 36, 60, 84, 108], 200) + 15 * labels
    r, p = point_biserial(scores, labels)
    ref = stats.pointbiserialr(labels, scores)
    assert r == pytest.approx(ref.statistic, rel=1e-10) and p == pytest.approx(ref.pvalue, rel=1e-8)


def test_point_biserial_degenerate_and_bad_input():
    assert all(math.isnan(x) for x in point_biserial([1, 2, 3], [1, 1, 1]))
    assert all(math.isnan(x) for x in point_biserial([5, 5, 5, 5], [0, 1, 0, 1]))
    with pytest.raises(ValueError, match="equal length"):
        point_biserial([1, 2, 3], [0, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        point_biserial([1, 2, 3], [0, 1, 2])


def test_summary_rows_split_safe_and_dangerous():
    records = RECORDS + [record(3, [[T, T], [F, F], [F, F]], dangerous=False, attack="none")]
    rows = summary_rows(records)
    assert [(r["attack"], r["tasks"], r["n"]) for r in rows] == [("none", "safe", 1), ("HI", "dangerous", 6)]
    assert rows[1]["PDR"] == pytest.approx(4 / 6) and rows[1]["JDR-R3"] == pytest.approx(1 / 5)
    assert rows[1]["invalid verdicts"] == 2 and rows[1]["invalid verdict share"] == pytest.approx(2 / 26)
    assert rows[0]["JDR-R1"] == 1.0
    table = markdown_table(rows, ["attack", "tasks", "PDR", "JDR-R2"])
    assert table.splitlines()[0] == "| attack | tasks | PDR | JDR-R2 |"
    assert table.splitlines()[3] == "| HI | dangerous | 0.667 | 0.000 |"


def test_failed_dialogues_are_counted_apart_and_left_out_of_every_metric():
    failed = {**record(3, [[T, T]]), "failure": {"stage": "judge", "error": "HTTP 503 (gave up after 5 attempts)"}}
    (row,) = summary_rows(RECORDS + [failed, failed])
    assert (row["n"], row["failed"]) == (6, 2)
    assert row["PDR"] == pytest.approx(4 / 6) and row["JDR-R1"] == pytest.approx(2 / 5)
