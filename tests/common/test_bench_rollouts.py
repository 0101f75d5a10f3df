"""tools/bench_rollouts.py: the ideal gain it prints, and a run at a tiny size (ours only)."""

from pathlib import Path

from tests.load_file import load_module

bench = load_module(Path(__file__).resolve().parents[2] / "tools" / "bench_rollouts.py", "bench_rollouts")


def test_ideal_gain_is_static_steps_over_full_batch_steps():
    # two calls of batch 4 that ran 10 and 6 steps for 20 tokens: full batches would need 5 steps
    assert bench.ideal_gain([10, 6], 20, 4) == 16 / 5


def test_a_tiny_run_prints_the_table(capsys):
    bench.main(["--prompts", "1", "--group", "3", "--new-tokens", "4", "--static-batch", "2", "--engine-slots", "2",
                "--skip-hf"])
    out = capsys.readouterr().out
    assert "| paged engine (ours) |" in out and "| static sampler (ours) |" in out and "Ideal gain" in out
