"""Tokenizers: load one from an HF directory, or build the real Qwen2/Qwen2.5 tokenizer offline.

No model hub is reachable here, but the `dashscope` package ships `qwen.tiktoken`, the 151,643
byte-level BPE ranks that Qwen2 and Qwen2.5 use. `qwen2_tokenizer()` turns them into a
`tokenizers` BPE (the standard tiktoken → HF conversion: vocab through GPT-2's byte-to-unicode map,
merges recovered from the ranks) with Qwen2's pipeline — NFC normaliser, Split on Qwen2's regex
(single digits), ByteLevel without its own regex — plus the 22 special tokens at ids
151643–151664, and Qwen2.5-Instruct's chat template. It is built once and cached as a directory.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from pathlib import Path

# Qwen2's pre-tokenisation pattern (transformers' models/qwen2/tokenization_qwen2.py): like
# cl100k's, but numbers split into single digits (\p{N}, not \p{N}{1,3}).
QWEN2_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_NUM_RANKS = 151_643
# (token, special) in id order from 151643. `special` mirrors Qwen2.5's tokenizer.json: the tool
# and FIM tokens are added tokens that `decode(skip_special_tokens=True)` keeps.
QWEN2_SPECIAL_TOKENS = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
QWEN2_TOKENIZER_DIRNAME = "qwen2_5-tokenizer"
QWEN2_MODEL_MAX_LENGTH = 131_072
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_tokenizer(path: str | os.PathLike):
    """Tokenizer of the HF model directory `path` (a `transformers.PreTrainedTokenizerBase`).

    Uses the directory's tokenizer files when present; a directory without them whose config.json
    has `model_type` "qwen2" gets the offline Qwen2.5 tokenizer (`qwen2_tokenizer()`).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    if any((path / name).is_file() for name in _TOKENIZER_FILES):
        return AutoTokenizer.from_pretrained(path)
    config_file = path / "config.json"
    model_type = None
    if config_file.is_file():
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type == "qwen2":
            return qwen2_tokenizer()
    found = f"model_type {model_type!r}" if config_file.is_file() else "no config.json"
    raise FileNotFoundError(
        f"no tokenizer in {path}: looked for {', '.join(_TOKENIZER_FILES)}, and for a config.json "
        f"with model_type 'qwen2' (found {found})"
    )


def end_token_ids(tokenizer) -> list[int]:
    """Ids that end generation: eos first, then `<|im_end|>` and `<|endoftext|>` where they exist.

    Returns a deduplicated list, e.g. [151645, 151643] for Qwen2.5-Instruct.
    """
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for token in ("<|im_end|>", "<|endoftext|>"):
        if token in vocab and int(vocab[token]) not in ids:
            ids.append(int(vocab[token]))
    if not ids:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos token, <|im_end|> "
            "or <|endoftext|>: nothing can end generation"
        )
    return ids


def qwen2_tiktoken_path() -> Path:
    """Path of `qwen.tiktoken` inside the installed `dashscope` package."""
    import dashscope

    path = Path(dashscope.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"dashscope {dashscope.__version__} has no {path}; Qwen2 ranks missing")
    return path


def qwen2_tokenizer(cache_dir: str | os.PathLike | None = None):
    """The real Qwen2/Qwen2.5 tokenizer (`PreTrainedTokenizerFast`), built offline and cached.

    Vocabulary 151,643 BPE tokens + 22 special tokens (ids 151643–151664); eos `<|im_end|>`,
    pad `<|endoftext|>`, no bos; chat template Qwen2.5-Instruct's. Cached as
    `<cache_dir>/qwen2_5-tokenizer/` (default cache: `common.checkpoint.gguf.default_cache_dir()`).
    """
    from transformers import PreTrainedTokenizerFast

    from common.checkpoint.gguf import default_cache_dir

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    out_dir = cache / QWEN2_TOKENIZER_DIRNAME
    if not (out_dir / "tokenizer.json").is_file():
        _save_atomically(build_qwen2_tokenizer(), out_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out_dir)
    check_qwen2_special_ids(tokenizer)
    return tokenizer


def build_qwen2_tokenizer(tiktoken_path: str | os.PathLike | None = None):
    """Build (no cache) the Qwen2.5 `PreTrainedTokenizerFast` from a `qwen.tiktoken` rank file."""
    from transformers import PreTrainedTokenizerFast

    from common.chat import load_chat_template

    path = Path(tiktoken_path) if tiktoken_path is not None else qwen2_tiktoken_path()
    ranks = read_tiktoken_ranks(path)
    if len(ranks) != QWEN2_NUM_RANKS:
        raise ValueError(f"{path} holds {len(ranks)} ranks; Qwen2 has {QWEN2_NUM_RANKS}")
    backend = _qwen2_backend(ranks)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[t for t, special in QWEN2_SPECIAL_TOKENS[1:] if special],
        model_max_length=QWEN2_MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.chat_template = load_chat_template("qwen2_5")
    check_qwen2_special_ids(tokenizer)
    return tokenizer


def check_qwen2_special_ids(tokenizer) -> None:
    """Raise ValueError unless every Qwen2.5 special token has its exact id (151643 + position)."""
    vocab = tokenizer.get_vocab()
    for offset, (token, _) in enumerate(QWEN2_SPECIAL_TOKENS):
        want = QWEN2_NUM_RANKS + offset
        if vocab.get(token) != want:
            raise ValueError(f"Qwen2 special token {token!r} has id {vocab.get(token)}, expected {want}")


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Parse a tiktoken rank file (`<base64 token> <rank>` per line) into {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as err:
                raise ValueError(f"{path}:{line_no}: not '<base64> <rank>': {line[:80]!r}") from err
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not the contiguous range 0..{len(ranks) - 1}")
    return ranks


def bpe_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """HF byte-level BPE vocab and merges equivalent to the tiktoken `ranks`.

    Tokens are spelled through GPT-2's byte-to-unicode map. Every split (left, right) of a token
    into two vocabulary tokens becomes a merge, ordered by the rank of the merged token (then of
    the parts): applying merges by that priority is tiktoken's "merge the lowest-ranked pair".
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_to_char = bytes_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(byte_to_char[b] for b in token)

    vocab = {spell(token): rank for token, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return vocab, [(spell(left), spell(right)) for _, _, _, left, right in merges]


def _qwen2_backend(ranks: dict[bytes, int]):
    """`tokenizers.Tokenizer` with Qwen2's model, normaliser, pre-tokeniser, decoder, specials."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    vocab, merges = bpe_vocab_and_merges(ranks)
    backend = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    # add_tokens appends in order, so the ids follow QWEN2_SPECIAL_TOKENS from 151643.
    backend.add_tokens(
        [
            AddedToken(token, special=special, normalized=False, lstrip=False, rstrip=False)
            for token, special in QWEN2_SPECIAL_TOKENS
        ]
    )
    return backend


def _save_atomically(tokenizer, out_dir: Path) -> None:
    """`save_pretrained` into a temporary sibling, then rename; a concurrent winner is kept."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tokenizer.save_pretrained(str(tmp_dir))
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            if not (out_dir / "tokenizer.json").is_file():
                raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


CHAR_ALPHABET = "0123456789+-*/=()?:;!., \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\\{}"


def char_tokenizer(alphabet: str = CHAR_ALPHABET):
    """A character-level tokenizer for tiny random models (tests, smoke configs): id 0 <pad>, 1 <eos>,
    2 <unk>, then one id per character of `alphabet`. Decoding concatenates characters."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")
