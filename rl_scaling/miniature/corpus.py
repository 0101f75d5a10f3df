"""The miniature's data: synthetic arithmetic (`rl_scaling.data.synthetic_arithmetic`) as a pretraining
corpus of worked answers and as the GRPO problem pool.

A pretraining document is the GRPO prompt followed by a worked answer (template `worked_answer.txt`):

    What is 23 + 45? The answer is \\boxed{68}.

The prompt is rendered with the same template the GRPO recipe uses (`plain`: the bare question), so a
pretrained model answers GRPO prompts in the format the reward grades.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from common.jsonl import write_jsonl
from rl_scaling.data import Problem, render_prompt, synthetic_arithmetic

ANSWER_PLACEHOLDER = "{answer}"


@functools.cache
def worked_answer_template() -> str:
    """The text of `worked_answer.txt` (one line holding `{answer}` once)."""
    text = resources.files("rl_scaling.miniature").joinpath("worked_answer.txt").read_text("utf-8").strip()
    if text.count(ANSWER_PLACEHOLDER) != 1:
        raise ValueError(f"worked_answer.txt must hold {ANSWER_PLACEHOLDER} exactly once, got {text!r}")
    return text


def worked_answer(reference: str) -> str:
    """'The answer is \\boxed{<reference>}.' (from worked_answer.txt)."""
    return worked_answer_template().replace(ANSWER_PLACEHOLDER, str(reference))


@dataclasses.dataclass(frozen=True)
class Document:
    """One pretraining example: the prompt exactly as GRPO renders it, and the answer that follows."""

    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer}"


def document_of(problem: Problem, template: str = "plain") -> Document:
    return Document(render_prompt(problem, template), worked_answer(problem.reference))


def mixed_problems(levels: Sequence[int], per_level: int | Sequence[int], seed: int) -> list[Problem]:
    """Problems of each synthetic level, shuffled together (seeded); repeats possible.

    per_level: one count for every level, or one count per level (same order as `levels`).
    """
    counts = [per_level] * len(levels) if isinstance(per_level, int) else list(per_level)
    if len(counts) != len(levels):
        raise ValueError(f"per_level gives {len(counts)} counts for {len(levels)} levels {tuple(levels)}")
    problems = [p for level, n in zip(levels, counts) for p in synthetic_arithmetic(n, level, seed)]
    order = np.random.default_rng(seed).permutation(len(problems))
    return [problems[i] for i in order]


def corrupt_answer(reference: str, rng: np.random.Generator) -> str:
    """`reference` (an integer, e.g. "-47") with one digit replaced by a different digit: a wrong answer
    of the same length and sign (the leading digit of a multi-digit number never becomes 0)."""
    sign, digits = ("-", reference[1:]) if reference.startswith("-") else ("", reference)
    if not digits.isdigit():
        raise ValueError(f"can only corrupt integer answers, got {reference!r}")
    i = int(rng.integers(len(digits)))
    choices = [d for d in "0123456789" if d != digits[i] and not (i == 0 and d == "0" and len(digits) > 1)]
    return sign + digits[:i] + choices[int(rng.integers(len(choices)))] + digits[i + 1:]


def pretraining_documents(levels: Sequence[int], size: int, seed: int, exclude_questions: Iterable[str] = (),
                          wrong_answer_rate: float = 0.0, template: str = "plain") -> list[Document]:
    """`size` documents, levels mixed evenly, none whose question is in `exclude_questions`.

    A share `wrong_answer_rate` of the documents (drawn at random, seeded) carries a wrong answer
    (`corrupt_answer`): noisy pretraining data that leaves probability on wrong answers for RL to remove.
    Raises ValueError when the exclusions leave a level without problems.
    """
    if not 0.0 <= wrong_answer_rate < 1.0:
        raise ValueError(f"wrong_answer_rate must be in [0, 1), got {wrong_answer_rate}")
    excluded = set(exclude_questions)
    per_level = -(-size // len(levels))
    problems = []
    for level in levels:
        kept = [p for p in synthetic_arithmetic(2 * per_level, level, seed) if p.question not in excluded]
        if not kept:
            raise ValueError(f"level {level}: every drawn question is excluded (held out)")
        while len(kept) < per_level:  # small levels (level 1: 100 questions) repeat
            kept += kept
        problems += kept[:per_level]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(problems))[:size]
    wrong = rng.random(size) < wrong_answer_rate
    docs = []
    for i, is_wrong in zip(order, wrong):
        p = problems[i]
        answer = corrupt_answer(p.reference, rng) if is_wrong else p.reference
        docs.append(Document(render_prompt(p, template), worked_answer(answer)))
    return docs


def write_problem_table(problems: Sequence[Problem], path: str | Path) -> Path:
    """A JSON Lines table (id, question, answer, level) that `rl_scaling.data.load_table` reads.

    No `difficulty` column on purpose: the trainer then keeps the file's (shuffled) order instead of
    sorting it into a curriculum, and holds out a seeded random subset.
    """
    return write_jsonl(path, ({"id": p.id, "question": p.question, "answer": p.reference, "level": p.difficulty}
                              for p in problems))
