"""A sentencepiece tokenizer trained on the miniature's corpus, served as a transformers tokenizer.

sentencepiece trains the vocabulary (BPE, digits always split, no text normalisation, no bos, id 0 pad,
1 unk, 2 eos `</s>`); transformers' `SpmConverter.build_tokenizer_from_spm_proto` turns the model file
into a `tokenizers` pipeline that encodes exactly like `SentencePieceProcessor.encode` (checked in the
tests over the whole corpus). The result is a `PreTrainedTokenizerFast`, so the GRPO trainer, the sampler,
`common.tokenizer.end_token_ids` and our checkpoints (`save_pretrained` / `AutoTokenizer`) use it as is.

    <dir>/spm.model                  the sentencepiece model (the source of truth)
    <dir>/tokenizer.json, ...        the transformers tokenizer (`save_pretrained`)
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

SPM_FILENAME = "spm.model"
PAD, UNK, EOS = "<pad>", "<unk>", "</s>"
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2


def train_sentencepiece(texts: Iterable[str], vocab_size: int, *, model_type: str = "bpe") -> bytes:
    """The serialised sentencepiece model (`ModelProto` bytes) trained on `texts` (one document each).

    `vocab_size` is an upper bound (`hard_vocab_limit=False`): a corpus with fewer distinct pieces
    gives a smaller vocabulary. Digits are split one per piece so numbers read digit by digit.
    """
    import sentencepiece as spm

    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    if vocab_size < 8:
        raise ValueError(f"vocab_size must be >= 8 (3 special ids + characters), got {vocab_size}")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buffer, vocab_size=vocab_size, model_type=model_type,
        pad_id=PAD_ID, unk_id=UNK_ID, eos_id=EOS_ID, bos_id=-1, pad_piece=PAD, unk_piece=UNK, eos_piece=EOS,
        character_coverage=1.0, normalization_rule_name="identity", split_digits=True,
        hard_vocab_limit=False, num_threads=1, minloglevel=2)
    return buffer.getvalue()


def hf_tokenizer_from_sentencepiece(model_proto: bytes):
    """`PreTrainedTokenizerFast` that encodes and decodes like the sentencepiece model `model_proto`.

    Special tokens: pad `<pad>` (0), unk `<unk>` (1), eos `</s>` (2); no bos, so
    `tokenizer(text, add_special_tokens=False)` and `tokenizer(text)` give the same ids.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_proto)
    pieces = [p.piece for p in proto.pieces]
    if pieces[:3] != [PAD, UNK, EOS]:
        raise ValueError(f"sentencepiece model must start with {[PAD, UNK, EOS]}, found {pieces[:3]}")
    if proto.trainer_spec.model_type == 2:  # BPE: vocab {piece: id}, merges ranked by piece score
        vocab = {piece: i for i, piece in enumerate(pieces)}
    else:  # unigram: [(piece, score)]
        vocab = [(p.piece, p.score) for p in proto.pieces]
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if backend is None:
        raise ValueError(f"sentencepiece model type {proto.trainer_spec.model_type} is not convertible")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, unk_token=UNK, eos_token=EOS,
                                   model_max_length=4096)


def build_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train on `texts`, write `<out_dir>/spm.model` and the transformers files; returns the tokenizer."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    proto = train_sentencepiece(texts, vocab_size)
    (out_dir / SPM_FILENAME).write_bytes(proto)
    tokenizer = hf_tokenizer_from_sentencepiece(proto)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def load_tokenizer_dir(directory: str | Path):
    """The tokenizer saved by `build_tokenizer` (through transformers' `AutoTokenizer`)."""
    from common.tokenizer import load_tokenizer

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory}: build the tokenizer first")
    return load_tokenizer(directory)


def sentencepiece_processor(directory: str | Path):
    """The raw `SentencePieceProcessor` of `<directory>/spm.model` (the reference encoder)."""
    import sentencepiece as spm

    path = Path(directory) / SPM_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no sentencepiece model at {path}")
    return spm.SentencePieceProcessor(model_file=str(path))
