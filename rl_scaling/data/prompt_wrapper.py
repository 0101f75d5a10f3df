"""The problem inside a prompt that already wraps it in instructions (verl tables' user messages).

verl-format tables store the whole user message, e.g.

    "What is 1+1? Let's think step by step and output the final answer within \\boxed{}."
    "Let's reason step by step to solve the following problem.\\n\\nWhat is 1+1?\\n\\nPlease put ..."

Our prompt templates (`prompts.yaml`) add their own instruction and \\boxed{} request, so a loader
either keeps the message as it is (`data.prompt_wrapper = "keep"`, with `data.template = "plain"`) or
strips the wrapper (`"strip"`) with these rules, applied in order:

1. one of our own templates around the problem (the `user` text of `prompts.yaml` before and after
   `{question}`) is removed exactly;
2. a first or last paragraph (text between blank lines) holding DAPO's request for an `Answer:` line
   ("... of the form Answer: $Answer ...", "... after \"Answer:\"") is removed;
3. trailing, then leading sentences that are instructions are removed: sentences holding an empty
   `\\boxed{}` (the answer request), the words "step by step", or DAPO's request.

A sentence ends at a line break, at `.`, `?`, `!` or `:` followed
by white space, or before a capitalised word that opens instructions ("Let's", "Please", "Put", ...,
`_OPENERS`): verl appends its instruction with a space, also to questions without a final `?`. Nothing is ever stripped to an empty problem. Anything else stays: `answer_request_left`
tells the loader when a \\boxed{} request survived, so that it can say so.
"""

from __future__ import annotations

import re

from rl_scaling.data.prompt_templates import QUESTION_PLACEHOLDER, load_prompt_templates

WRAPPER_CHOICES = ("strip", "keep")
_EMPTY_BOX = re.compile(r"\\boxed\s*\{\s*\}")
_ANSWER_LINE = re.compile(r"Answer:\s*\$Answer|after \"Answer:\"", re.IGNORECASE)  # DAPO's request
_STEP_BY_STEP = re.compile(r"step[- ]by[- ]step", re.IGNORECASE)
# Sentences end at a line break, after . ? ! : and white space, or before an instruction's opening word: verl's
# preprocessing appends the instruction with a space, also to questions without a final question mark.
_OPENERS = r"Let[’']s|Let us|Please|Put|Output|Think|Reason|Solve|Remember|Return|Write|Give|Provide|Show|Make sure"
_SENTENCE_BREAK = re.compile(rf"(?<=[.?!:])\s+|\n+|\s+(?=(?:{_OPENERS})\b)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


def answer_request_left(text: str) -> bool:
    """True when `text` still asks for an answer in an empty `\\boxed{}`."""
    return _EMPTY_BOX.search(text) is not None


def _is_answer_line_request(paragraph: str) -> bool:
    return _ANSWER_LINE.search(paragraph) is not None


def _is_instruction(sentence: str) -> bool:
    return (answer_request_left(sentence) or _STEP_BY_STEP.search(sentence) is not None
            or _is_answer_line_request(sentence))


def _template_wrappers() -> list[tuple[str, str]]:
    """(text before, text after) `{question}` in each template's user text, for those that wrap it."""
    pairs = []
    for spec in load_prompt_templates()["templates"].values():
        before, _, after = spec["user"].partition(QUESTION_PLACEHOLDER)
        if before.strip() or after.strip():
            pairs.append((before.strip(), after.strip()))
    return pairs


def _strip_template(text: str) -> str:
    for before, after in _template_wrappers():
        if text.startswith(before) and text.endswith(after) and len(text) > len(before) + len(after):
            inner = text[len(before):len(text) - len(after)].strip()
            if inner:
                return inner
    return text


def _strip_trailing(text: str, breaks: re.Pattern, is_instruction) -> str:
    while True:
        found = list(breaks.finditer(text))
        if not found or not is_instruction(text[found[-1].end():]):
            return text
        text = text[:found[-1].start()].rstrip()


def _strip_leading(text: str, breaks: re.Pattern, is_instruction) -> str:
    while True:
        first = breaks.search(text)
        if first is None or not is_instruction(text[:first.start()]):
            return text
        text = text[first.end():].lstrip()


def strip_wrapper(text: str) -> str:
    """The problem inside an instruction wrapper (rules in the module docstring); `text` when none is found.

        strip_wrapper("What is 1+1? Let's think step by step and output the final answer within \\\\boxed{}.")
        == "What is 1+1?"
    """
    text = text.strip()
    stripped = _strip_template(text)
    if stripped != text:
        return stripped
    for breaks, is_instruction in ((_PARAGRAPH_BREAK, _is_answer_line_request), (_SENTENCE_BREAK, _is_instruction)):
        text = _strip_leading(_strip_trailing(text, breaks, is_instruction), breaks, is_instruction)
    return text


def apply_wrapper_choice(text: str, choice: str) -> str:
    """`text` as `data.prompt_wrapper` says: "strip" (`strip_wrapper`) or "keep" (verbatim)."""
    if choice == "strip":
        return strip_wrapper(text)
    if choice == "keep":
        return text
    raise ValueError(f"unknown prompt_wrapper {choice!r}; choices: {list(WRAPPER_CHOICES)}")
