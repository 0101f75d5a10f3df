"""Data made from a model's parameters once per parameter version (packed weights, an inference copy): kept while
the parameters are the same arrays, made anew when any array changes (a training step makes new ones)."""

from __future__ import annotations

from typing import Any, Callable

import jax


class PerVersion:
    """`get(params)`: make(params), made once per version of `params` (compared by array identity)."""

    def __init__(self, make: Callable[[Any], Any]):
        self.make = make
        self._value, self._of = None, None  # the data, and the parameter arrays it came from

    def get(self, params) -> Any:
        leaves = jax.tree.leaves(params)
        if self._of is None or len(leaves) != len(self._of) or any(a is not b for a, b in zip(leaves, self._of)):
            self._value, self._of = None, None  # the old data goes before the new is made
            self._value, self._of = self.make(params), leaves
        return self._value
