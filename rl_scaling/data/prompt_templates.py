"""Render a math problem into a model prompt, from the templates in `prompts.yaml`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources

import yaml

from rl_scaling.data.problem import Problem

QUESTION_PLACEHOLDER = "{question}"
ChatTemplate = Callable[[list[dict[str, str]]], str]


@functools.cache
def load_prompt_templates() -> dict:
    """The parsed `prompts.yaml`: {"default": name, "templates": {name: {"system", "user"}}}."""
    text = resources.files("rl_scaling.data").joinpath("prompts.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    for name, template in config["templates"].items():
        if template["user"].count(QUESTION_PLACEHOLDER) != 1:
            raise ValueError(f"prompts.yaml template {name!r}: 'user' must hold {QUESTION_PLACEHOLDER} once")
    return config


def prompt_messages(question: str | Problem, template: str | None = None) -> list[dict[str, str]]:
    """Chat messages `[{"role": "system"|"user", "content": str}, ...]` for one problem."""
    config = load_prompt_templates()
    name = template or config["default"]
    if name not in config["templates"]:
        raise KeyError(f"unknown prompt template {name!r}; known: {sorted(config['templates'])}")
    spec = config["templates"][name]
    text = question.question if isinstance(question, Problem) else question
    messages = []
    if spec.get("system"):
        messages.append({"role": "system", "content": spec["system"]})
    messages.append({"role": "user", "content": spec["user"].replace(QUESTION_PLACEHOLDER, text)})
    return messages


def render_prompt(
    question: str | Problem,
    template: str | None = None,
    chat_template: ChatTemplate | None = None,
) -> str:
    """The prompt text for one problem.

    Without `chat_template`: the system text (if any), a blank line, then the user text. With it:
    `chat_template(messages)`, e.g.
    `lambda m: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)`.
    """
    messages = prompt_messages(question, template)
    if chat_template is None:
        return "\n\n".join(m["content"] for m in messages)
    rendered = chat_template(messages)
    if not isinstance(rendered, str):
        raise TypeError(
            f"chat_template must return str, got {type(rendered).__name__} "
            "(pass tokenize=False to apply_chat_template)"
        )
    return rendered
