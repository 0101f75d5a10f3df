"""Tests of common/chat.py: SmolLM2 against transformers' own rendering and hand-written strings,
Qwen2.5 against hand-written ChatML strings."""

from __future__ import annotations

import pytest

from common.chat import available_chat_templates, chat_prompt_ids, load_chat_template, render_chat
from common.tokenizer import load_tokenizer

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CONVERSATIONS = [
    [{"role": "user", "content": "What is 7 + 5?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"}],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": "Add 2 and 3.\nShow work."},
    ],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "数学 🤖"},
    ],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_matches_transformers(smollm2_tokenizer, messages, add_generation_prompt):
    expected = smollm2_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert render_chat(smollm2_tokenizer, messages, add_generation_prompt) == expected


def test_smollm2_hand_written(smollm2_tokenizer):
    text = render_chat(smollm2_tokenizer, CONVERSATIONS[0])
    assert text == (
        f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 7 + 5?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_prompt_ids_match_transformers(smollm2_tokenizer):
    for messages in CONVERSATIONS:
        expected = smollm2_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if not isinstance(expected, list):  # transformers 5 returns a BatchEncoding
            expected = expected["input_ids"]
        assert chat_prompt_ids(smollm2_tokenizer, messages) == list(expected)
    ids = chat_prompt_ids(smollm2_tokenizer, CONVERSATIONS[0])
    assert ids[0] == 1 and ids.count(1) == 3  # <|im_start|> = 1 opens each of the 3 turns, no extra BOS


def test_qwen2_5_without_system_message_gets_the_default(qwen2_tok):
    text = render_chat(qwen2_tok, CONVERSATIONS[0])
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 7 + 5?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_qwen2_5_with_system_message(qwen2_tok):
    text = render_chat(qwen2_tok, CONVERSATIONS[1])
    assert text == (
        "<|im_start|>system\nAnswer in one word.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_qwen2_5_multi_turn_without_generation_prompt(qwen2_tok):
    text = render_chat(qwen2_tok, CONVERSATIONS[2], add_generation_prompt=False)
    assert text == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello. How can I help?<|im_end|>\n"
        "<|im_start|>user\nAdd 2 and 3.\nShow work.<|im_end|>\n"
    )


def test_qwen2_5_prompt_ids(qwen2_tok):
    ids = chat_prompt_ids(qwen2_tok, CONVERSATIONS[0])
    # <|im_start|> system \n ... <|im_end|> \n <|im_start|> user \n ... <|im_start|> assistant \n
    assert ids[:3] == [151644, 8948, 198]
    assert ids[-3:] == [151644, 77091, 198]
    assert ids.count(151644) == 3 and ids.count(151645) == 2
    assert qwen2_tok.decode(ids) == render_chat(qwen2_tok, CONVERSATIONS[0])


def test_bundled_qwen2_5_template_is_the_tokenizers(qwen2_tok):
    assert "qwen2_5" in available_chat_templates() and "chatml" in available_chat_templates()
    assert qwen2_tok.chat_template == load_chat_template("qwen2_5")
    named = render_chat(qwen2_tok, CONVERSATIONS[3], template="qwen2_5")
    assert named == render_chat(qwen2_tok, CONVERSATIONS[3])


def test_tokenizer_without_template_needs_a_named_fallback(smollm2_dir):
    tok = load_tokenizer(smollm2_dir)
    tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat template.*chatml"):
        render_chat(tok, CONVERSATIONS[0])
    text = render_chat(tok, CONVERSATIONS[0], template="chatml")
    assert text == "<|im_start|>user\nWhat is 7 + 5?<|im_end|>\n<|im_start|>assistant\n"


def test_bad_input_errors(qwen2_tok):
    with pytest.raises(ValueError, match=r"no chat template named 'llama9'"):
        render_chat(qwen2_tok, CONVERSATIONS[0], template="llama9")
    with pytest.raises(ValueError, match=r"messages\[1\].*'content'"):
        render_chat(qwen2_tok, [{"role": "user", "content": "a"}, {"role": "assistant"}])
    with pytest.raises(ValueError, match=r"messages\[0\].*'role'"):
        render_chat(qwen2_tok, [{"content": "a"}])
    with pytest.raises(ValueError, match="non-empty list"):
        render_chat(qwen2_tok, [])
