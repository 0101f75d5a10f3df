"""`load_pretrained` takes a checkpoint path relative to the working directory as well as an absolute one
(orbax itself refuses relative paths: the facade resolves the path once, at its entry)."""

import os

import numpy as np
import pytest
from flax import nnx

from common import load_pretrained
from common.api import resolve_model_path
from common.checkpoint.orbax_io import save_checkpoint
from common.config import get_preset
from common.model import Decoder
from common.tokenizer import char_tokenizer


@pytest.fixture
def tiny_checkpoint(tmp_path):
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(0))
    save_checkpoint(tmp_path / "run" / "ckpt", model, char_tokenizer(), step=3)
    return tmp_path / "run" / "ckpt", model


@pytest.mark.parametrize("relative", ["run/ckpt", "./run/../run/ckpt", "run/ckpt/"])
def test_relative_checkpoint_path_loads_like_the_absolute_one(tiny_checkpoint, relative, monkeypatch):
    path, model = tiny_checkpoint
    monkeypatch.chdir(path.parent.parent)
    loaded, tokenizer = load_pretrained(relative, dtype="float32", attention="xla")
    ids = np.array([[3, 4, 5, 6]])
    np.testing.assert_array_equal(np.asarray(loaded(ids)), np.asarray(model(ids)))
    assert tokenizer.eos_token == "<eos>"


def test_resolved_path_is_absolute_and_names_a_missing_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    assert resolve_model_path("here") == tmp_path / "here"
    assert os.path.isabs(resolve_model_path("here"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        resolve_model_path("absent")
