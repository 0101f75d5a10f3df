"""Reading the answer letters out of a questionnaire reply: strict about meaning, lenient about layout.

The validity rule. The reply is cut into one stretch of text per item: an item starts at a line that
opens with its number ("3.", "3)", "3:", "Q3", "Item 3", "**3.**", a table row "| 3 |", a JSON key "3"
or "Q3") and runs to the next such line (or to a blank line once it has named an option). Within its
stretch, an item's answer is every option the text NAMES:
  - a letter set apart: "(B)", "[B]", "**B**", "`B`", "B)", "B.", "B:", "B" alone or before " - reason",
    "Answer: B", "Option B", "A/C";
  - failing any letter, an option's label ("Somewhat me") or an alias of it (dark_triad.yaml).
An item naming exactly one option is answered with it. An item naming none is missing. An item naming
two or more is AMBIGUOUS — never scored, never guessed — and so is the whole reply (`questionnaire.py`).

Examples (item 3):
  "3. (B) I might"              -> B        "3. **B** - I might"           -> B
  "3. Answer: B"                -> B        "Q3: B"                         -> B
  "3) B) somewhat"              -> B        "3. Somewhat me"                -> B
  "3. You would heap praise...\nAnswer: B"  -> B   (the answer on the line after the statement)
  '{"3": "B", ...}'             -> B        "| 3 | You would heap praise... | B |"  -> B
  "3. (A) Not me"               -> A        (the letter and its own label agree)
  "3. (A) Not me, (B) Describes me somewhat, (C) Definitely me"  -> ambiguous (options echoed)
  "3. (A)/(C) it depends"       -> ambiguous (a hedge)
  "3. A person like me..."      -> missing  ("A" starting a sentence names nothing)
"""

from __future__ import annotations

import dataclasses
import json
import re

LETTERS = "ABC"
_DECORATION = r"[\s*_`>#|\-]*"
# An item's opening: markdown decoration, an optional "Q"/"Item"/"Question"/"Statement" prefix, the number,
# then a separator (".", ")", ":", a dash) or the line's end; with a prefix, whitespace is enough.
_ITEM_START = re.compile(
    rf"^{_DECORATION}(?:(?P<prefix>q|item|question|statement|no\.?)\s*#?\s*)?(?P<number>\d{{1,2}})"
    r"(?:[*_`]*\s*(?:[.):\-\u2013\u2014](?!\d)|$)|(?(prefix)\s|(?!)))[*_`]*\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_LETTER_PATTERNS = (
    re.compile(r"\(\s*([ABCabc])\s*\)"),                                  # (B) (b)
    re.compile(r"\[\s*([ABCabc])\s*\]"),                                  # [B]
    re.compile(r"(?:\*\*|__|`)\s*\(?([ABCabc])\)?\s*[.):]?\s*(?:\*\*|__|`)"),  # **B** `B` **B)**
    re.compile(r"(?<![\w'(\[])([ABC])(?=/|[.):,](?:\s|$|[*_`])|[.):,]?\s*$|\s+[-\u2013\u2014]\s)"),  # B) B. B, B
    re.compile(r"(?<![\w'(\[])([ABC])(?=\s+or\s+\(?[ABC]\b)"),               # A or B
    re.compile(r"(?:/|\bor\s)\s*\(?([ABC])\b"),                           # A/C, A or C
    re.compile(r"\b(?:answer|option|choice|letter|rating|response)\s*(?:is\s*)?[:=\-]?\s*\(?([ABCabc])\b",
               re.IGNORECASE),                                            # Answer: B, option b
)


@dataclasses.dataclass(frozen=True)
class ItemAnswer:
    """What one item's stretch of text names: `letters` (sorted, distinct) and a short `reason`."""

    letters: tuple[str, ...]
    reason: str = ""


def letters_named(text: str) -> tuple[list[str], int]:
    """Option letters named in `text` by a set-apart letter (see the module docstring), in order of first
    appearance, and where the first one ends (-1 if none)."""
    found: list[tuple[int, int, str]] = []
    for pattern in _LETTER_PATTERNS:
        found += [(m.start(), m.end(), m.group(1).upper()) for m in pattern.finditer(text)]
    found.sort()
    letters = list(dict.fromkeys(letter for _, _, letter in found))
    return letters, (found[0][1] if found else -1)


def labels_named(text: str, labels: dict[str, tuple[str, ...]]) -> list[str]:
    """Options whose label or an alias of it (letter -> phrases) occurs in `text` as whole words."""
    lowered, letters = f" {text.lower()} ", []
    for letter, phrases in labels.items():
        for phrase in sorted(phrases, key=len, reverse=True):
            if re.search(rf"(?<![\w]){re.escape(phrase.lower())}(?![\w])", lowered):
                letters.append(letter)
                break
    return letters


def item_answer(text: str, labels: dict[str, tuple[str, ...]]) -> ItemAnswer:
    """The options named in one item's stretch of text: letters, else labels."""
    letters, end = letters_named(text)
    if not letters:
        letters, end = labels_named(text, labels), len(text)
    reason = text[end:].strip(" \t\n:;,.-\u2013\u2014)*_`|") if end >= 0 else ""
    return ItemAnswer(tuple(sorted(set(letters))), " ".join(reason.split()))


def json_answer_lines(text: str) -> list[str] | None:
    """A reply that is (or holds, maybe in a ``` fence) one JSON object or array of answers, as lines
    "N. <answer>"; None when there is no such JSON."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    end = text.rfind("}" if text[start] == "{" else "]")
    try:
        data = json.loads(text[start:end + 1])
    except ValueError:
        return None
    lines = _json_lines(data)
    return lines or None


def _answer_text(value) -> str:
    if isinstance(value, dict):
        keys = ("answer", "letter", "choice", "option", "response", "rating")
        answer = next((value[k] for k in value if str(k).lower() in keys), "")
        reason = next((value[k] for k in value if str(k).lower() in ("reason", "explanation", "why")), "")
        return f"{answer} - {reason}" if reason else str(answer)
    return str(value) if isinstance(value, str) else ""


def _json_lines(data) -> list[str]:
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), (dict, list)):
        return _json_lines(next(iter(data.values())))  # {"answers": {...}}
    if isinstance(data, dict):
        numbered = ((re.search(r"\d{1,2}", str(k)), v) for k, v in data.items())
        return [f"{m.group()}. {_answer_text(v)}" for m, v in numbered if m]
    if isinstance(data, list) and all(isinstance(v, str) for v in data):
        return [f"{i}. {v}" for i, v in enumerate(data, start=1)]
    if isinstance(data, list):
        lines = []
        for entry in (v for v in data if isinstance(v, dict)):
            number = next((entry[k] for k in entry if str(k).lower() in ("item", "number", "id", "q", "question")),
                          None)
            match = re.search(r"\d{1,2}", str(number)) if number is not None else None
            if match:
                lines.append(f"{match.group()}. {_answer_text(entry)}")
        return lines
    return []


def table_row_line(line: str) -> str | None:
    """A markdown table row "| 3 | statement | B |" as "3. statement | B"; "" for a header or rule row
    (no item number cell); None when the line is not a table row."""
    stripped = line.strip()
    if not (stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1):
        return None
    cells = [c.strip() for c in stripped.strip("|").split("|")]
    for i, cell in enumerate(cells):
        match = re.fullmatch(r"[*_`]*(?:q|item\s*)?(\d{1,2})[.)]?[*_`]*", cell, re.IGNORECASE)
        if match:
            return f"{match.group(1)}. " + " | ".join(cells[:i] + cells[i + 1:])
    return ""


def normalised_lines(text: str) -> list[str]:
    """The reply as lines, JSON answers and table rows rewritten as "N. <answer>" lines."""
    from_json = json_answer_lines(text)
    if from_json is not None:
        return from_json
    lines = []
    for line in text.splitlines():
        row = table_row_line(line)
        lines.append(line if row is None else row)
    return lines


def item_stretches(text: str, n_items: int) -> dict[int, list[str]]:
    """item number -> the texts of its stretches (an item written twice, say statement then answer, has
    two). Numbers outside 1..n_items end the stretch before them and are otherwise ignored."""
    stretches: dict[int, list[list[str]]] = {}
    current: list[str] | None = None
    for line in normalised_lines(text):
        match = _ITEM_START.match(line)
        if match:
            number = int(match.group("number"))
            current = [match.group("rest")] if 1 <= number <= n_items else None
            if current is not None:
                stretches.setdefault(number, []).append(current)
        elif current is not None:
            if not line.strip() and letters_named("\n".join(current))[0]:
                current = None  # a blank line after an answered item ends it (no postscript joins in)
            else:
                current.append(line)
    return {number: ["\n".join(lines) for lines in parts] for number, parts in stretches.items()}


def read_answers(text: str, n_items: int, labels: dict[str, tuple[str, ...]]) -> dict[int, ItemAnswer]:
    """item number (1..n_items) -> the options its text names, for every item the reply mentions."""
    answers = {}
    for number, parts in item_stretches(text, n_items).items():
        named = [item_answer(part, labels) for part in parts]
        letters = tuple(sorted({letter for a in named for letter in a.letters}))
        answers[number] = ItemAnswer(letters, next((a.reason for a in named if a.letters), ""))
    return answers
