"""Token ids against the model's vocabulary: a tokenizer with ids beyond the embedding fails at load, a pad
beyond it is replaced by an id inside, and no id outside reaches the model."""

import warnings

import numpy as np
import pytest
from flax import nnx

from common import generate, load_pretrained
from common.checkpoint.orbax_io import save_checkpoint
from common.config import get_preset
from common.model import Decoder
from common.tokenizer import char_tokenizer
from common.vocab import check_pad_id, check_prompt_ids, fit_tokenizer
from tests.common.hf_reference import make_hf_model

CHAR_IDS = len(char_tokenizer())  # <pad> 0, <eos> 1, <unk> 2, then the alphabet


def tokenizer_with_added_pad():
    """A char tokenizer whose pad is an added token one past its vocabulary (id CHAR_IDS)."""
    tokenizer = char_tokenizer()
    tokenizer.add_special_tokens({"pad_token": "<extra_pad>"})
    assert tokenizer.pad_token_id == CHAR_IDS
    return tokenizer


def test_a_tokenizer_larger_than_the_vocabulary_is_an_error_naming_both_sizes():
    with pytest.raises(ValueError, match=rf"ckpt: tokenizer vocab {CHAR_IDS} .* vocab_size 64"):
        fit_tokenizer(char_tokenizer(), 64, "ckpt")


def test_a_larger_embedding_than_the_tokenizer_is_fine():
    tokenizer = char_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_tokenizer(tokenizer, CHAR_IDS + 100, "ckpt") is tokenizer
    assert tokenizer.pad_token_id == 0


def test_a_pad_beyond_the_vocabulary_becomes_the_eos():
    tokenizer = tokenizer_with_added_pad()
    with pytest.warns(UserWarning, match=rf"pad id {CHAR_IDS} .* vocab_size {CHAR_IDS}: padding with .*id 1"):
        fit_tokenizer(tokenizer, CHAR_IDS, "ckpt")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 1


def test_a_pad_beyond_the_vocabulary_without_an_eos_is_an_error():
    tokenizer = tokenizer_with_added_pad()
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match=rf"pad id {CHAR_IDS} .* no eos token"):
        fit_tokenizer(tokenizer, CHAR_IDS, "ckpt")


def test_prompt_and_pad_ids_outside_the_vocabulary_are_refused():
    check_prompt_ids([[0, 5], [9]], 10)
    with pytest.raises(ValueError, match=r"prompt 1 holds token id 10, outside .*vocab_size 10"):
        check_prompt_ids([[0, 5], [9, 10]], 10)
    with pytest.raises(ValueError, match=r"prompt 0 holds token id -1"):
        check_prompt_ids([[-1]], 10)
    check_pad_id(9, 10)
    with pytest.raises(ValueError, match=r"pad id 151643 is outside .*vocab_size 640"):
        check_pad_id(151643, 640)


def test_qwen2_directory_without_tokenizer_files_and_a_small_vocabulary_fails_at_load(tmp_path, qwen2_tok):
    """The fallback Qwen2.5 tokenizer (151,665 ids) on a 640-row model: once NaN log-probs at generate."""
    make_hf_model("qwen2-gqa2-tied-1e6", tmp_path, vocab=640)
    with pytest.raises(ValueError, match=rf"{tmp_path}: tokenizer vocab 151665 .* vocab_size 640"):
        load_pretrained(tmp_path)


def test_our_checkpoint_of_a_qwen2_model_without_tokenizer_fails_at_load(tmp_path, qwen2_tok):
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(0))  # a qwen2 model of 512 rows
    save_checkpoint(tmp_path / "ckpt", model)
    with pytest.raises(ValueError, match=r"tokenizer vocab 151665 .* vocab_size 512"):
        load_pretrained(tmp_path / "ckpt")


def test_a_pad_beyond_the_vocabulary_is_replaced_and_generation_stays_finite(tmp_path):
    """An HF directory whose tokenizer pads with an added token the model has no row for: the pad becomes the
    eos, and ragged (hence padded) prompts generate tokens of finite log-probability, as each prompt alone."""
    make_hf_model("qwen2-gqa2-tied-1e6", tmp_path, vocab=CHAR_IDS, weight_std=0.3)
    tokenizer_with_added_pad().save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="padding with the eos"):
        model, tokenizer = load_pretrained(tmp_path)
    assert tokenizer.pad_token_id == 1
    prompts = ["What is 7 + 5?", "1+1=", "Name a colour in three words, then stop."]
    for kw in (dict(temperature=0.0), dict(temperature=1.0, top_p=0.9, seed=3)):
        outs = generate(model, tokenizer, prompts, max_new_tokens=6, stop_token_ids=[], **kw)
        for out in outs:
            assert len(out.logprobs) == 6 and np.isfinite(out.logprobs).all() and max(out.logprobs) <= 0
            assert all(0 <= t < CHAR_IDS for t in out.token_ids)
    alone = generate(model, tokenizer, prompts[1:2], max_new_tokens=6, stop_token_ids=[])[0]
    together = generate(model, tokenizer, prompts, max_new_tokens=6, stop_token_ids=[])[1]
    assert alone.token_ids == together.token_ids
    np.testing.assert_allclose(alone.logprobs, together.logprobs, rtol=1e-4, atol=1e-5)
