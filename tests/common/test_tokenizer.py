"""Tests of common/tokenizer.py.

References, none of them our own encoder: Qwen2.5 ids documented in OFFLINE.md, rank lookups in
dashscope's qwen.tiktoken (parsed by tiktoken's own loader), tiktoken's encoder over the same
ranks, and transformers' Qwen2Tokenizer pipeline definition.
"""

from __future__ import annotations

import json
import unicodedata

import pytest

from common import tokenizer as tokenizer_module
from common.tokenizer import (
    build_qwen2_tokenizer,
    end_token_ids,
    load_tokenizer,
    qwen2_tiktoken_path,
    read_tiktoken_ranks,
)

PATTERN = (  # Qwen2's pattern, copied from OFFLINE.md (not imported: the test must be independent)
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

ASSORTED_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.\n\nIt's 12:45 and I'm DON'T-ing.",
    "数学是科学的皇后，数论是数学的皇后。",
    "日本語のテキストとカタカナ、ひらがな。",
    "Привет, мир! Ελληνικά και العربية.",
    "Emoji: 🤖🚀👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵 ✓",
    "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n    return -x\n\n\n",
    "Numbers 1234567890, 3.14159, -42, 1e-9, ¾ and ٣٤٥.",
    "   leading spaces, trailing spaces   \r\n\r\nwindows lines\t\ttabs",
    "\\boxed{\\frac{1}{2}} $x^2 + y^2 = z^2$",
]


@pytest.fixture(scope="module")
def tiktoken_ranks():
    """{token bytes: rank} parsed by tiktoken's loader, with its disk cache switched off."""
    from tiktoken.load import load_tiktoken_bpe

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_GYM_CACHE_DIR", "")
        return load_tiktoken_bpe(str(qwen2_tiktoken_path()))


@pytest.fixture(scope="module")
def tiktoken_reference(tiktoken_ranks):
    import tiktoken

    return tiktoken.Encoding(
        "qwen2-reference", pat_str=PATTERN, mergeable_ranks=tiktoken_ranks, special_tokens={}
    )


def test_documented_qwen2_5_ids(qwen2_tok):
    assert qwen2_tok.encode("Hello world") == [9707, 1879]
    assert qwen2_tok.encode("<|im_start|>user\n") == [151644, 872, 198]


def test_all_22_special_token_ids_are_exact(qwen2_tok):
    expected = [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
        "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
        "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
        "<|repo_name|>", "<|file_sep|>",
    ]
    for offset, token in enumerate(expected):
        assert qwen2_tok.convert_tokens_to_ids(token) == 151643 + offset, token
        assert qwen2_tok.encode(token) == [151643 + offset], token
    assert len(qwen2_tok) == 151665


def test_roles_of_special_tokens(qwen2_tok):
    assert qwen2_tok.eos_token == "<|im_end|>" and qwen2_tok.eos_token_id == 151645
    assert qwen2_tok.pad_token == "<|endoftext|>" and qwen2_tok.pad_token_id == 151643
    assert qwen2_tok.bos_token is None
    assert "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." in qwen2_tok.chat_template


def test_known_ids_are_ranks_in_the_tiktoken_file(qwen2_tok, tiktoken_ranks):
    for text in [" the", "\n\n", "Hello", " world", "\n", " ", "import", " numpy"]:
        assert qwen2_tok.encode(text) == [tiktoken_ranks[text.encode()]], repr(text)


def test_numbers_are_tokenised_digit_by_digit(qwen2_tok, tiktoken_ranks):
    digit = {str(d): tiktoken_ranks[str(d).encode()] for d in range(10)}
    assert qwen2_tok.encode("2024") == [digit["2"], digit["0"], digit["2"], digit["4"]]
    ids = qwen2_tok.encode("x=31415926")
    assert ids[-8:] == [digit[c] for c in "31415926"]


def test_matches_tiktoken_on_assorted_text(qwen2_tok, tiktoken_reference):
    for text in ASSORTED_TEXTS:
        text = unicodedata.normalize("NFC", text)  # tiktoken has no normaliser; Qwen2 applies NFC
        assert qwen2_tok.encode(text) == tiktoken_reference.encode_ordinary(text), repr(text)


def test_decode_inverts_encode(qwen2_tok):
    for text in ASSORTED_TEXTS:
        text = unicodedata.normalize("NFC", text)
        assert qwen2_tok.decode(qwen2_tok.encode(text)) == text, repr(text)


def test_nfc_normalisation(qwen2_tok):
    assert qwen2_tok.encode("cafe\u0301") == qwen2_tok.encode("caf\u00e9")


def test_skip_special_tokens_keeps_tool_tokens(qwen2_tok):
    ids = qwen2_tok.encode("<|im_start|>assistant\n<tool_call>x</tool_call><|im_end|>")
    assert qwen2_tok.decode(ids, skip_special_tokens=True) == "assistant\n<tool_call>x</tool_call>"


def test_pipeline_matches_transformers_qwen2_definition(qwen2_tok):
    from transformers import Qwen2Tokenizer

    reference = json.loads(Qwen2Tokenizer(vocab={"a": 0}, merges=[]).backend_tokenizer.to_str())
    ours = json.loads(qwen2_tok.backend_tokenizer.to_str())
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        assert ours[part] == reference[part], part
    assert ours["model"]["type"] == "BPE" and ours["model"]["ignore_merges"] is False


def test_fresh_build_matches_the_cached_tokenizer(qwen2_tok):
    fresh = build_qwen2_tokenizer()
    text = " ".join(ASSORTED_TEXTS)
    assert fresh.encode(text) == qwen2_tok.encode(text)
    assert fresh.get_vocab() == qwen2_tok.get_vocab()


def test_end_token_ids(qwen2_tok, smollm2_tokenizer):
    assert end_token_ids(qwen2_tok) == [151645, 151643]
    # SmolLM2: <|endoftext|> = 0, <|im_end|> = 2 (its eos) — from its config.json/GGUF metadata.
    assert end_token_ids(smollm2_tokenizer) == [2, 0]


def test_load_tokenizer_from_hf_directory(smollm2_dir):
    tok = load_tokenizer(smollm2_dir)
    assert len(tok) == 49152
    assert tok.convert_tokens_to_ids("<|im_start|>") == 1


def test_load_tokenizer_falls_back_to_qwen2_for_qwen2_configs(tmp_path, monkeypatch):
    sentinel = object()
    monkeypatch.setattr(tokenizer_module, "qwen2_tokenizer", lambda cache_dir=None: sentinel)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert load_tokenizer(tmp_path) is sentinel


def test_load_tokenizer_errors_name_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(FileNotFoundError, match=rf"no tokenizer in {tmp_path}.*'llama'"):
        load_tokenizer(tmp_path)


def test_read_tiktoken_ranks_rejects_malformed_lines(tmp_path):
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ValueError, match=r"bad.tiktoken:2"):
        read_tiktoken_ranks(bad)
    gappy = tmp_path / "gappy.tiktoken"
    gappy.write_text("IQ== 0\nIg== 2\n")
    with pytest.raises(ValueError, match="contiguous"):
        read_tiktoken_ranks(gappy)
