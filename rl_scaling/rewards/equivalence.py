"""The paper's binary correctness reward, computed in-process and without any time bound.

`grade_unbounded` is what a grading worker runs; call `rl_scaling.rewards.grade` instead, which runs
it in a killable worker process. math-verify's own timeouts use `signal.alarm` (main thread only), so
they are switched off here (`parsing_timeout=None`, `timeout_seconds=None`) and the bound is enforced by
killing the worker.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation

from rl_scaling.rewards.boxed import last_boxed, text_after_think
from rl_scaling.rewards.references import clean_reference, strip_thousands_commas

# math-verify warns once per process that its timeout is disabled; that is by design here.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_PLAIN_DECIMAL = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")
_SCIENTIFIC = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+))[eE]([-+]?\d+)$")
_LATEX_SPACING = re.compile(r"\\[,;:! ]")
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")


def canonical_decimal(text: str) -> str:
    """`027` -> `27`, `27.0` -> `27`, `0.50` -> `0.5`, `+3` -> `3`, `-0` -> `0`; other text unchanged."""
    if not _PLAIN_DECIMAL.match(text):
        return text
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    if value == 0:
        return "0"
    # normalize() drops trailing zeros; format "f" avoids exponent notation like 1E+3.
    return format(value.normalize(), "f")


def normalise_answer(answer: str) -> str:
    """Canonical string form of an answer for the cheap exact-match test.

    Only rewrites that cannot merge two different answers: surrounding `$` and spaces, LaTeX spacing
    (`\\,`, `\\!`), `\\left`/`\\right`, `\\dfrac`/`\\tfrac` -> `\\frac`, a trailing full stop, thousands
    commas in a plain number, and the canonical form of a plain decimal number.
    """
    text = answer.strip().strip("$").strip()
    text = _LATEX_SPACING.sub("", text)
    text = _SIZING.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = re.sub(r"\s+", "", text)
    text = text.rstrip(".")
    text = strip_thousands_commas(text)
    return canonical_decimal(text)


def latex_for_parsing(answer: str) -> str:
    """An answer wrapped for math-verify: `\\boxed{...}`, with `4.5e33` spelled `4.5\\times 10^{33}`.

    math-verify reads `4.5e33` as 4.5·e·33 (Euler's e); Minerva references use that notation.
    """
    text = strip_thousands_commas(answer.strip().strip("$"))
    sci = _SCIENTIFIC.match(text)
    if sci:
        text = f"{sci.group(1)}\\times 10^{{{int(sci.group(2))}}}"
    return f"\\boxed{{{text}}}"


def symbolically_equal(answer: str, reference: str) -> bool:
    """Whether math-verify finds `answer` equal to `reference` (both LaTeX answer strings). Unbounded."""
    from math_verify import parse, verify  # imported here: only workers pay for sympy

    gold = parse(latex_for_parsing(reference), parsing_timeout=None)
    target = parse(latex_for_parsing(answer), parsing_timeout=None)
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=None))


def verify_whole_response(text: str, reference: str) -> bool:
    """math-verify on a whole response without a box: its own answer extraction decides. Unbounded."""
    from math_verify import parse, verify

    gold = parse(latex_for_parsing(reference), parsing_timeout=None)
    target = parse(text, parsing_timeout=None)
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=None))


def grade_unbounded(response: str, reference: str | int | float) -> float:
    """1.0 when `response`'s final answer equals `reference`, else 0.0. NO time bound.

    Steps: text after the last `</think>`; its last `\\boxed{}`; normalised string equality, then
    symbolic equality via math-verify; with no box, math-verify on the whole text. `reference` may be
    raw (GSM8K `... #### 72`, a solution with `\\boxed{}`, a float, an integer string).
    """
    ref = clean_reference(reference)
    if not ref:
        return 0.0
    text = text_after_think(response)
    predicted = last_boxed(text)
    if predicted is not None:
        if not predicted.strip():
            return 0.0
        if normalise_answer(predicted) == normalise_answer(ref):
            return 1.0
        return 1.0 if symbolically_equal(predicted, ref) else 0.0
    return 1.0 if verify_whole_response(text, ref) else 0.0
