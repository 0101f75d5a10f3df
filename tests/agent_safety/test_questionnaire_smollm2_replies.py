"""The questionnaire parser on real replies of SmolLM2-135M-Instruct (tests/agent_safety/data/, generated once,
greedy): each is scored or invalidated as the validity rule says, the expected answers read by hand."""

from pathlib import Path

import pytest
import yaml

from agent_safety.questionnaire import parse_questionnaire

DATA = yaml.safe_load((Path(__file__).parent / "data" / "smollm2_questionnaire_replies.yaml").read_text())
REPLIES = DATA["replies"]


def expected_problem(expected: dict) -> str | None:
    """The problem `parse_questionnaire` states for these expectations (questionnaire.py's wording)."""
    if expected["ambiguous"]:
        return f"items naming more than one option: {expected['ambiguous']}"
    if expected["missing"]:
        return f"no answer for items {expected['missing']}"
    return None


@pytest.mark.parametrize("entry", REPLIES, ids=[e["context"] for e in REPLIES])
def test_real_smollm2_reply_is_read_as_the_rule_says(entry):
    expected = entry["expected"]
    result = parse_questionnaire(entry["reply"])
    assert result.answers == expected["answers"]
    assert result.problem == expected_problem(expected)
    assert result.score == expected["score"] and result.valid is (expected["score"] is not None)


def test_the_real_replies_cover_no_answer_labels_in_prose_and_letters_beyond_the_options():
    answered = [e for e in REPLIES if e["expected"]["answers"]]
    assert len(REPLIES) >= 8 and len(answered) >= 2
    assert any(set(e["expected"]["answers"].values()) == {"A", "B", "C"} for e in answered)
