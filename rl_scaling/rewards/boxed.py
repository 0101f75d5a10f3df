"""Locate the final answer in a model response: the text after `</think>` and its `\\boxed{...}`.

Pure string functions, no math: they run in the parent process (format reward) and in the grading
workers (correctness reward) alike.
"""

from __future__ import annotations

import re

THINK_CLOSE = "</think>"

# `\boxed{` and `\fbox{`, allowing spaces before the brace (`\boxed {5}`). `\boxed` must not be a
# prefix of a longer command name, which the `\s*\{` right after it guarantees.
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


def text_after_think(response: str) -> str:
    """The text after the last `</think>` of `response`, or all of it when there is none."""
    _, sep, tail = response.rpartition(THINK_CLOSE)
    return tail if sep else response


def _matching_brace(text: str, open_index: int) -> int | None:
    """Index of the `}` that closes the `{` at `open_index`; None when unbalanced.

    Escaped braces (`\\{`, `\\}`) are literal characters in LaTeX and are skipped.
    """
    depth = 0
    i = open_index
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character, e.g. `\{` or `\}`
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every balanced `\\boxed{...}` / `\\fbox{...}` of `text`, outermost only, in order.

    Returns (start, end, content) triples: `text[start:end]` is the whole command and `content` the
    text between its braces (nested braces kept). A box inside another box is not listed separately.
    An unbalanced box (e.g. a response cut off mid-answer) is not listed.
    """
    spans: list[tuple[int, int, str]] = []
    pos = 0
    while True:
        match = _BOX_OPEN.search(text, pos)
        if match is None:
            return spans
        open_index = match.end() - 1
        close_index = _matching_brace(text, open_index)
        if close_index is None:
            # Unbalanced: later boxes would be nested inside this one; look past its opening only.
            pos = match.end()
            continue
        spans.append((match.start(), close_index + 1, text[open_index + 1 : close_index]))
        pos = close_index + 1


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) of `text`, None when there is none.

    "Last" is by opening position: when the last `\\boxed{` opened is unbalanced (a response cut off
    mid-answer) the result is None rather than an earlier, abandoned answer.
    """
    last_open = None
    for match in _BOX_OPEN.finditer(text):
        last_open = match
    if last_open is None:
        return None
    # Walk outwards: the last opened box may sit inside an outer one (`\boxed{\fbox{3}}`); the answer is
    # the outermost complete box that contains it, i.e. the last listed span.
    spans = boxed_spans(text)
    if not spans or spans[-1][1] <= last_open.start():
        return None
    return spans[-1][2]
