"""tools/bench_grpo.py: the pieces that decide what is compared and counted (no model, no TRL run)."""

import sys
import json
import time
from pathlib import Path

import pytest

from tests.load_file import load_module

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_grpo.py"


@pytest.fixture(scope="module")
def bench():
    yield load_module(TOOL, "bench_grpo")
    sys.modules.pop("bench_grpo", None)


def test_step_flops_is_eight_n_per_token(bench):
    # 6 N (update) + 2 N (rollout) per token: 8 * 1e6 params * 1000 tokens.
    assert bench.step_flops(1_000_000, 1000) == 8e9


def test_shape_rejects_batches_that_do_not_split(bench):
    assert bench.BenchShape().sequences == 64
    with pytest.raises(ValueError, match="micro-batches of 3"):
        bench.BenchShape(prompts=8, group=8, micro_batch=3)
    with pytest.raises(ValueError, match="group >= 2"):
        bench.BenchShape(group=1)


def test_config_makes_one_update_per_step_with_the_papers_loss(bench):
    cfg = bench.grpo_bench_config("smollm2-135m-instruct", bench.BenchShape(), 0.001, "sampler", num_steps=3)
    g = cfg.grpo
    assert (g.prompts_per_step, g.group_size, g.max_response_len, g.micro_batch_size) == (8, 8, 128, 8)
    assert g.mini_batch_prompts == g.prompts_per_step  # one optimiser update per step, as TRL's single step
    assert (g.aggregation, g.kl_estimator, g.kl_coef, g.old_logprobs) == ("token-mean", "k3", 0.001, "sampler")
    assert cfg.data.chat and cfg.data.synthetic_level == 1 and cfg.eval.every == 0 and cfg.checkpoint.every == 0


def test_trl_reward_grades_with_our_correctness_reward(bench):
    rewards = bench.trl_reward(prompts=["p", "p", "p"],
                               completions=["so \\boxed{12}", "\\boxed{13}", "I give up"],
                               reference=["12", "12", "12"])
    assert rewards == [1.0, 0.0, 0.0]


def test_phase_timer_adds_wall_time_per_label_and_resets(bench):
    class Work:
        def nap(self, s):
            time.sleep(s)
            return s

    w = Work()
    timer = bench.PhaseTimer(w, {"nap": "sleeping"})
    assert w.nap(0.02) == 0.02
    w.nap(0.02)
    first = timer.take()
    assert 0.04 <= first["sleeping"] < 0.5
    assert timer.take() == {"sleeping": 0.0}


def test_hf_dir_for_trl_names_the_architecture(bench, tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 7}))
    (src / "model.safetensors").write_bytes(b"weights")
    out = Path(bench.hf_dir_for_trl(str(src), str(tmp_path / "work")))
    config = json.loads((out / "config.json").read_text())
    assert config == {"model_type": "llama", "vocab_size": 7, "architectures": ["LlamaForCausalLM"]}
    assert (out / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((src / "config.json").read_text())["model_type"] == "llama"  # source untouched

    (src / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(ValueError, match="unknown model_type 'mamba'"):
        bench.hf_dir_for_trl(str(src), str(tmp_path / "work2"))


def test_table_ratio_and_flop_share_from_hand_numbers(bench):
    import argparse

    trl = bench.summarise_trl([{"wall": 30.0, "tokens": 1200, "rollout": 10.0, "reward": 0.5, "logprobs": 4.0,
                                "update": 15.5}], prompt_tokens=400, sequences=4)
    assert trl["response_len"] == 200.0  # (1200 - 400) / 4
    ours = {"step_s": 10.0, "tokens": 1000.0, "response_len": 150.0, "rollout": 4.0, "reward": 0.1, "logprobs": 1.0,
            "update": 4.9, "first_step_s": 40.0, "compile_s": 25.0, "compile_in_timed": 0.0}
    args = argparse.Namespace(model="m", kl=0.001, old_logprobs="sampler", steps=1, warmup=1)
    table = bench.markdown_table([], args, bench.BenchShape(), peak=100.0, n_params=1_000_000, ours=ours, trl=trl,
                                 load="1.00", torch_threads=2)
    # ours 100 tokens/s, TRL 40 tokens/s -> 2.50x; 3.00x in time per step.
    assert "2.50x in tokens/s, 3.00x in time per step" in table
    # 8 N tokens / s / peak: 8e6 * 1000 / 10 s / 1e11 FLOP/s = 0.8%.
    assert "| ours (JAX) | 10.0 | 1000 | 100 |" in table and "| 0.8% |" in table


def test_a_missing_peer_is_named_before_our_side_runs(bench, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    assert "datasets" in bench.missing_peer_modules()
    started = []
    monkeypatch.setattr(bench, "peak_matmul_gflops", lambda *a, **k: started.append(1) or 1.0)
    with pytest.raises(SystemExit):
        bench.main([])
    err = capsys.readouterr().err
    assert "datasets" in err and "pip install -e '.[bench]'" in err
    assert not started  # nothing of ours ran before the error
