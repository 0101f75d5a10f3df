"""Chat prompts: render a conversation with a tokenizer's chat template, and tokenise it.

Templates the repository ships live as Jinja data files in `common/chat_templates/`:
  `qwen2_5`  Qwen2.5-Instruct's template (default system prompt "You are Qwen, created by Alibaba
             Cloud. You are a helpful assistant."; tool calls as in the original).
  `chatml`   plain ChatML, no default system prompt: the named fallback for tokenizers without one.
A message is a dict with a `role` ("system", "user", "assistant", "tool") and a `content` string.
"""

from __future__ import annotations

from importlib import resources

TEMPLATE_PACKAGE = "common.chat_templates"


def available_chat_templates() -> list[str]:
    """Names of the bundled chat templates (file names in `common/chat_templates/` without .jinja)."""
    files = resources.files(TEMPLATE_PACKAGE).iterdir()
    return sorted(f.name[: -len(".jinja")] for f in files if f.name.endswith(".jinja"))


def load_chat_template(name: str) -> str:
    """The Jinja source of the bundled chat template `name` (e.g. "qwen2_5")."""
    resource = resources.files(TEMPLATE_PACKAGE) / f"{name}.jinja"
    if not resource.is_file():
        raise ValueError(
            f"no chat template named {name!r} in {TEMPLATE_PACKAGE}; "
            f"available: {available_chat_templates()}"
        )
    # The editor's final newline is not part of the template (the hub's templates end without one).
    return resource.read_text(encoding="utf-8").rstrip("\n")


def check_messages(messages: list[dict]) -> None:
    """Raise a ValueError naming the message index and key if `messages` is not a valid chat."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"messages must be a non-empty list of dicts, got {messages!r}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        if not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{i}] needs a string 'role', got {message.get('role')!r}")
        content = message.get("content")
        if not isinstance(content, str) and not (content is None and message.get("tool_calls")):
            raise ValueError(
                f"messages[{i}] (role {message['role']!r}) needs a string 'content', got {content!r}"
            )


def render_chat(
    tokenizer,
    messages: list[dict],
    add_generation_prompt: bool = True,
    template: str | None = None,
) -> str:
    """Render `messages` into the prompt text the model sees.

    `template=None` uses the tokenizer's own chat template; a name (see
    `available_chat_templates()`) uses that bundled template instead. A tokenizer without a
    template and no name given is an error rather than a silent guess.
    """
    check_messages(messages)
    if template is not None:
        source = load_chat_template(template)
    elif getattr(tokenizer, "chat_template", None):
        source = None  # the tokenizer's own
    else:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} has no chat "
            f"template; pass template= one of {available_chat_templates()}"
        )
    text = tokenizer.apply_chat_template(
        list(messages),
        chat_template=source,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    if not isinstance(text, str):  # guard against API drift in transformers
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def chat_prompt_ids(
    tokenizer,
    messages: list[dict],
    add_generation_prompt: bool = True,
    template: str | None = None,
) -> list[int]:
    """Token ids of `render_chat(...)`: shape [prompt_len]. The template already holds every
    special token, so none are added on top (no extra BOS)."""
    text = render_chat(tokenizer, messages, add_generation_prompt, template)
    return list(tokenizer.encode(text, add_special_tokens=False))
