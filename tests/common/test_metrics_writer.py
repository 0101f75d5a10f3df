"""MetricsWriter: JSON lines, TensorBoard scalars read back with tensorboard's EventAccumulator."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.metrics_writer import MetricsWriter, read_metrics


def _scalars(logdir, tag):
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_lines_appear_flushed_and_parse(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(0, {"loss": 1.5, "tokens": np.int64(1024)})
    # flushed before close: read while the writer is still open, as a killed run would leave it
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"step": 0, "loss": 1.5, "tokens": 1024}]
    writer.write(1, {"loss": np.float32(0.25), "nan_metric": float("nan")})
    writer.close()
    records = read_metrics(tmp_path)
    assert records[1]["step"] == 1 and records[1]["loss"] == 0.25
    assert np.isnan(records[1]["nan_metric"])
    assert isinstance(records[0]["tokens"], int)


def test_jax_scalars_are_accepted(tmp_path):
    import jax.numpy as jnp

    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(3, {"kl": jnp.float32(0.5), "count": jnp.int32(7)})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 3, "kl": 0.5, "count": 7}]


def test_tensorboard_scalars_read_back(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        for step in range(3):
            writer.write(step, {"train/reward": 0.1 * step})
    assert _scalars(tmp_path, "train/reward") == [(0, 0.0), (1, pytest.approx(0.1)), (2, pytest.approx(0.2))]


def test_write_image_from_array_and_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    png = tmp_path / "plot.png"
    fig.savefig(png)
    plt.close(fig)
    logdir = tmp_path / "run"
    with MetricsWriter(logdir) as writer:
        writer.write_image(5, "fit/curve", png)
        writer.write_image(6, "fit/array", np.zeros((4, 5, 3), np.uint8))
        with pytest.raises(ValueError, match="fit/bad"):
            writer.write_image(7, "fit/bad", np.zeros((4, 5, 2)))
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"fit/curve", "fit/array"}
    assert [e.step for e in acc.Images("fit/curve")] == [5]
    assert (acc.Images("fit/array")[0].width, acc.Images("fit/array")[0].height) == (5, 4)


def test_truncate_after_makes_resumed_file_equal_uninterrupted(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    with MetricsWriter(whole) as writer:
        for step in range(6):
            writer.write(step, {"loss": float(step)})
    with MetricsWriter(resumed) as writer:  # run killed after writing step 4; checkpoint at step 2
        for step in range(5):
            writer.write(step, {"loss": float(step)})
    with open(resumed / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # partial line from the kill
    with MetricsWriter(resumed) as writer:
        writer.truncate_after(2)
        assert [r["step"] for r in read_metrics(resumed)] == [0, 1, 2]
        for step in range(3, 6):
            writer.write(step, {"loss": float(step)})
    assert (resumed / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
    # TensorBoard purges the first run's events past step 2 (steps 3 and 4 were written twice)
    assert [s for s, _ in _scalars(resumed, "loss")] == [0, 1, 2, 3, 4, 5]


def test_disabled_writer_writes_nothing(tmp_path):
    logdir = tmp_path / "host1"
    with MetricsWriter(logdir, enabled=False) as writer:
        writer.write(0, {"loss": 1.0})
        writer.write_image(0, "img", np.zeros((2, 2)))
        writer.truncate_after(0)
    assert not logdir.exists()


def test_bad_input_is_named(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        with pytest.raises(ValueError, match="'grad_norm'"):
            writer.write(0, {"grad_norm": np.ones(3)})
        with pytest.raises(ValueError, match="'step'"):
            writer.write(0, {"step": 1})
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(1, {"loss": 0.0})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_metrics(tmp_path / "nowhere")
    (tmp_path / "broken.jsonl").write_text('{"step": 0}\nnot json\n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        read_metrics(tmp_path / "broken.jsonl")
