"""Turn the reference answers of every math data set into one clean answer string.

Formats (see /work/shared/data/math/README.md):
  GSM8K         worked solution ending in `#### 72` (sometimes `#### 1,000`)
  MATH/Minerva  worked solution whose last `\\boxed{...}` is the answer
  AMC23         a float, `27.0`
  AIME24        an integer string, `"025"`
  MATH-500      a clean answer string (`answer`; its `solution` also holds it boxed)
  OlympiadBench a one-element list of inline math, `["$\\frac{1}{2}$"]` (`final_answer`)
  verl tables   `reward_model.ground_truth`: a clean string, a number, or a one-element list
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from rl_scaling.rewards.boxed import last_boxed

GSM8K_ANSWER_MARK = "####"

# Which record field holds the reference for each data set (short names as the data loaders use them).
REFERENCE_FIELDS: dict[str, str] = {
    "gsm8k": "answer",
    "aime24": "answer",
    "amc23": "answer",
    "minerva_math": "solution",
    "math": "solution",
    "math500": "answer",
    "aime25": "answer",
    "olympiadbench": "final_answer",
}

_THOUSANDS_NUMBER = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


def strip_thousands_commas(text: str) -> str:
    """`1,000` -> `1000`, `-12,345.5` -> `-12345.5`; anything else (e.g. a tuple `1,2`) unchanged."""
    text = text.strip()
    return text.replace(",", "") if _THOUSANDS_NUMBER.match(text) else text


def format_number(value: float | int) -> str:
    """A number as a model would write it: `27.0` -> `27`, `0.5` -> `0.5`; integers exactly."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"format_number expects an int or float, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"reference number is not finite: {value!r}")
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def clean_reference(reference: str | int | float | list | tuple) -> str:
    """The answer inside any raw reference, as a string.

    - GSM8K solution: the text after the last `####`, thousands commas removed;
    - a solution with `\\boxed{}`: the content of its last box;
    - a number (AMC's `27.0`): formatted without a spurious `.0`;
    - a one-element list (OlympiadBench, some verl tables): its element, cleaned;
    - inline math `$...$` as the whole answer: the math inside;
    - anything else: the stripped string itself.
    """
    if isinstance(reference, (list, tuple)):
        if len(reference) != 1:
            raise ValueError(f"a reference list must hold one answer, got {len(reference)}: {list(reference)[:3]}")
        return clean_reference(reference[0])
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        return format_number(reference)
    if not isinstance(reference, str):
        raise TypeError(f"reference must be a str or a number, got {type(reference).__name__}")
    if GSM8K_ANSWER_MARK in reference:
        return strip_thousands_commas(reference.rpartition(GSM8K_ANSWER_MARK)[2])
    boxed = last_boxed(reference)
    if boxed is not None:
        return boxed.strip()
    text = reference.strip()
    if len(text) > 2 and text[0] == text[-1] == "$" and "$" not in text[1:-1]:
        return text[1:-1].strip()
    return text


def extract_reference_answer(record: Mapping[str, Any], dataset: str) -> str:
    """Clean reference answer of one raw JSON record of `dataset` (a key of REFERENCE_FIELDS).

    Raises:
      KeyError: unknown `dataset`, or the record lacks the data set's reference field (both named).
      ValueError: the reference is empty or (Minerva/MATH) the solution has no `\\boxed{}` answer.
    """
    if dataset not in REFERENCE_FIELDS:
        raise KeyError(f"unknown data set {dataset!r}; known: {sorted(REFERENCE_FIELDS)}")
    field = REFERENCE_FIELDS[dataset]
    if field not in record:
        raise KeyError(
            f"{dataset} record has no {field!r} field (the reference); fields found: {sorted(record)}"
        )
    raw = record[field]
    if field == "solution" and isinstance(raw, str) and last_boxed(raw) is None:
        raise ValueError(f"{dataset} solution has no \\boxed{{}} answer: ...{raw[-200:]!r}")
    answer = clean_reference(raw)
    if not answer:
        raise ValueError(f"{dataset} record has an empty reference in field {field!r}")
    return answer
