"""Synthetic integer arithmetic: the offline default task, with a difficulty level per problem.

Levels (operands drawn uniformly, inclusive ranges):
  0: a                        a in 0..9 (a copy task: tiny random models learn it within a few GRPO steps)
  1: a + b                    a, b in 0..9
  2: a + b or a - b           a, b in 10..99, a >= b for a - b (no negative results)
  3: a * b                    a in 10..99, b in 2..9
  4: (a op b) op c or a op (b op c), ops in {+, -, *}, operands in 1..20
  5: like 4 with four operands and three operators, operands in 1..50
The reference is the exact integer value of the expression (standard precedence: `*` binds tighter;
parentheses are written wherever the left-to-right reading would differ).
"""

from __future__ import annotations

import numpy as np

from rl_scaling.data.problem import Problem

SOURCE = "synthetic_arithmetic"
LEVELS = (0, 1, 2, 3, 4, 5)
_OPS = ("+", "-", "*")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2}


def _apply(op: str, left: int, right: int) -> int:
    return left + right if op == "+" else left - right if op == "-" else left * right


def _random_expression(rng: np.random.Generator, num_operands: int, high: int) -> tuple[str, int, int]:
    """(text, value, precedence) of a random binary expression tree with `num_operands` leaves."""
    if num_operands == 1:
        value = int(rng.integers(1, high + 1))
        return str(value), value, 3
    left_count = int(rng.integers(1, num_operands))
    op = _OPS[int(rng.integers(len(_OPS)))]
    left_text, left_value, left_prec = _random_expression(rng, left_count, high)
    right_text, right_value, right_prec = _random_expression(rng, num_operands - left_count, high)
    prec = _PRECEDENCE[op]
    # Parenthesise exactly where standard left-to-right precedence would read it otherwise.
    # Left-associative reading: a same-level left side needs none ((a - b) + c = a - b + c); a
    # same-level right side always gets them (a - (b + c)), which is also the clearer text.
    if left_prec < prec:
        left_text = f"({left_text})"
    if right_prec <= prec:
        right_text = f"({right_text})"
    return f"{left_text} {op} {right_text}", _apply(op, left_value, right_value), prec


def _expression_for_level(rng: np.random.Generator, level: int) -> tuple[str, int]:
    if level == 0:
        a = int(rng.integers(0, 10))
        return str(a), a
    if level == 1:
        a, b = (int(v) for v in rng.integers(0, 10, size=2))
        return f"{a} + {b}", a + b
    if level == 2:
        a, b = (int(v) for v in rng.integers(10, 100, size=2))
        if rng.integers(2):
            return f"{a} + {b}", a + b
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", a - b
    if level == 3:
        a, b = int(rng.integers(10, 100)), int(rng.integers(2, 10))
        return f"{a} * {b}", a * b
    text, value, _ = _random_expression(rng, 3 if level == 4 else 4, 20 if level == 4 else 50)
    return text, value


def synthetic_arithmetic(n: int, level: int, seed: int) -> list[Problem]:
    """`n` arithmetic problems of `level` (see module docstring); the same (n, level, seed) gives the
    same list, and the first k problems do not depend on n.

    Questions read "What is 7 + 5?"; `*` is multiplication. difficulty = float(level).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown arithmetic level {level!r}; levels: {list(LEVELS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng([seed, level])
    problems = []
    for i in range(n):
        text, value = _expression_for_level(rng, level)
        problems.append(
            Problem(
                id=f"arith-L{level}-s{seed}-{i}",
                question=f"What is {text}?",
                reference=str(value),
                difficulty=float(level),
                source=SOURCE,
            )
        )
    return problems
