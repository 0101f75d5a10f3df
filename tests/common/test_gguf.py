"""Tests of common/checkpoint/gguf.py and tools/convert_smollm2.py on the real SmolLM2 GGUF."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.checkpoint import gguf as gguf_module
from common.checkpoint.gguf import check_gguf_file, convert_gguf_to_hf, ensure_smollm2

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smollm2_model(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(
        smollm2_dir, dtype=torch.float32, output_loading_info=True
    )
    return model.eval(), info


def test_converted_directory_loads_in_transformers(smollm2_dir, smollm2_model):
    model, info = smollm2_model
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    c = model.config  # SmolLM2-135M's shape, as documented in OFFLINE.md
    shape = (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads)
    assert shape == (30, 576, 9, 3)
    assert c.vocab_size == 49152 and c.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    saved = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in saved and saved["tie_word_embeddings"] is True
    assert saved["architectures"] == ["LlamaForCausalLM"]
    assert saved["rope_parameters"]["rope_theta"] == 100000.0
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (smollm2_dir / name).is_file(), name


def test_safetensors_leave_out_the_tied_head(smollm2_dir):
    from safetensors import safe_open

    with safe_open(str(smollm2_dir / "model.safetensors"), framework="np") as f:
        names = set(f.keys())
    assert "lm_head.weight" not in names
    assert len(names) == 1 + 30 * 9 + 1  # embeddings, 9 tensors per layer, final norm


def test_embeddings_equal_the_dequantised_gguf_tensor(smollm2_dir, smollm2_gguf):
    import gguf
    from safetensors import safe_open

    reader = gguf.GGUFReader(smollm2_gguf)
    (token_embd,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    rows = 2000  # Q4_1 packs each row on its own: de-quantising the first rows is enough
    reference = gguf.quants.dequantize(token_embd.data[:rows], token_embd.tensor_type)
    with safe_open(str(smollm2_dir / "model.safetensors"), framework="np") as f:
        ours = f.get_slice("model.embed_tokens.weight")[:rows]
    assert reference.shape == (rows, 576)
    np.testing.assert_array_equal(ours, reference.astype(np.float32))


def test_greedy_answer_is_coherent(smollm2_model, smollm2_tokenizer):
    import torch

    model, _ = smollm2_model
    messages = [{"role": "user", "content": "What is 7 + 5?"}]
    text = smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([smollm2_tokenizer.encode(text, add_special_tokens=False)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on 2 shared cores, torch's spinning threads make decoding ~8x slower
    try:
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=40, do_sample=False)
    finally:
        torch.set_num_threads(threads)
    answer = smollm2_tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "12" in answer, answer


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        check_gguf_file(tmp_path / "nope.gguf")


def test_non_gguf_file_is_rejected_by_magic(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ValueError, match=r"not a GGUF file.*b'PK\\x03\\x04'"):
        check_gguf_file(fake)


def test_gguf_cut_inside_its_header_is_rejected(tmp_path, smollm2_gguf):
    short = tmp_path / "short.gguf"
    with open(smollm2_gguf, "rb") as f:
        short.write_bytes(f.read(100))  # magic, version, counts, then the metadata stops
    with pytest.raises(ValueError, match="truncated"):
        convert_gguf_to_hf(short, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gguf_cut_inside_its_tensor_data_is_rejected(tmp_path, smollm2_gguf):
    short = tmp_path / "short.gguf"
    with open(smollm2_gguf, "rb") as f:
        short.write_bytes(f.read(2_000_000))  # metadata intact, token_embd.weight cut short
    with pytest.raises(ValueError, match="truncated"):
        check_gguf_file(short)


def test_failed_conversion_leaves_no_output(tmp_path, smollm2_gguf, monkeypatch):
    def write_half_then_die(gguf_path, hf_dir):
        hf_dir.mkdir()
        (hf_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # as if the process were killed mid-write

    monkeypatch.setattr(gguf_module, "check_gguf_file", Path)  # the real check is tested above
    monkeypatch.setattr(gguf_module, "_write_hf_directory", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf_to_hf(smollm2_gguf, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten_silently(tmp_path, smollm2_gguf):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_gguf_to_hf(smollm2_gguf, tmp_path / "out")


def test_ensure_smollm2_is_idempotent(smollm2_dir, smollm2_gguf):
    stamp = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_smollm2(smollm2_dir.parent) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert smollm2_gguf == smollm2_dir.parent / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_ensure_smollm2_works_once_under_concurrent_callers(tmp_path, monkeypatch):
    import threading
    import time

    calls = {"download": 0, "convert": 0}

    def fake_download(dest):
        calls["download"] += 1
        time.sleep(0.2)  # long enough for the other caller to reach the lock
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"GGUF")

    def fake_convert(gguf_path, out_dir, overwrite=False):
        calls["convert"] += 1
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"")
        return out_dir

    monkeypatch.setattr(gguf_module, "_download_smollm2_gguf", fake_download)
    monkeypatch.setattr(gguf_module, "convert_gguf_to_hf", fake_convert)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_smollm2(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / "SmolLM2-135M-Instruct"] * 3
    assert calls == {"download": 1, "convert": 1}


def test_tool_prints_the_directory_and_reports_bad_files(smollm2_dir, tmp_path):
    tool = [sys.executable, str(REPO_ROOT / "tools" / "convert_smollm2.py")]
    done = subprocess.run(tool + ["--out", str(smollm2_dir.parent)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(smollm2_dir)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope")
    failed = subprocess.run(
        tool + ["--gguf", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert failed.returncode == 1 and "not a GGUF file" in failed.stderr


@pytest.mark.slow
def test_full_conversion_of_a_local_gguf(tmp_path, smollm2_gguf, smollm2_dir):
    from safetensors.numpy import load_file

    out = convert_gguf_to_hf(smollm2_gguf, tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temporary siblings left
    ours, reference = load_file(out / "model.safetensors"), load_file(smollm2_dir / "model.safetensors")
    assert ours.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(ours[name], reference[name])
