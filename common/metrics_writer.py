"""One metrics writer for every run: a JSON-lines file and TensorBoard scalars side by side.

``logdir/metrics.jsonl`` holds one line per ``write`` call, ``{"step": s, **metrics}``, flushed at
once so a killed run keeps every line it wrote. TensorBoard events go to ``logdir`` as well.
On resume call ``truncate_after(restored_step)``: lines of steps past the checkpoint are dropped
(the resumed run rewrites them) and TensorBoard is told to purge its events past that step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from common.jsonl import dumps_line, iter_jsonl, repair_tail, write_jsonl

METRICS_FILENAME = "metrics.jsonl"


def _scalar(key: str, value: Any) -> Union[int, float]:
    """A Python int (integer/bool inputs) or float from a number, numpy or JAX scalar."""
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"metric {key!r} must be a scalar, got shape {array.shape}")
    if array.dtype.kind in "biu":
        return int(array.reshape(()))
    if array.dtype.kind != "f":
        raise ValueError(f"metric {key!r} must be a number, got {value!r}")
    return float(array.reshape(()))


def read_metrics(path: Union[str, os.PathLike]) -> list[dict]:
    """Records of a metrics file (or of ``<dir>/metrics.jsonl`` when given a directory), in order.

    Read by ``common.jsonl``: a last line cut short by a kill is skipped with a warning; any other bad
    line, or a record without a "step", raises ``ValueError`` naming file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILENAME
    if not path.exists():
        raise FileNotFoundError(f"no metrics file at {path}")
    records = []
    for number, record in iter_jsonl(path):
        if "step" not in record:
            raise ValueError(f"{path}:{number}: expected an object with a 'step' key")
        records.append(record)
    return records


class MetricsWriter:
    """Appends metrics to ``logdir/metrics.jsonl`` and to TensorBoard.

    Args:
      logdir: directory for both outputs (created).
      enabled: False makes every method a no-op and touches no file (non-zero hosts of a
        multi-host run).
      tensorboard: False writes only the JSON lines.
    """

    def __init__(self, logdir: Union[str, os.PathLike], *, enabled: bool = True, tensorboard: bool = True):
        self.logdir = Path(logdir)
        self.enabled = enabled
        self.path = self.logdir / METRICS_FILENAME
        self._use_tensorboard = tensorboard
        self._tb = None
        self._purge_step: Optional[int] = None
        self._file = None
        if enabled:
            self.logdir.mkdir(parents=True, exist_ok=True)
            repair_tail(self.path)  # a killed run's cut-short line must not prefix the next record
            self._file = open(self.path, "a", encoding="utf-8")

    def _check_open(self) -> None:
        if self._file is None:
            raise RuntimeError(f"MetricsWriter for {self.logdir} is closed")

    def _summary_writer(self):
        if self._tb is None and self._use_tensorboard:
            from tensorboardX import SummaryWriter  # lazy: heavy import, unused when disabled

            # Event files are named by the second they open in; a nanosecond suffix keeps a writer
            # reopened within that second (resume, truncate_after) from overwriting the previous one
            # and keeps the files in opening order for TensorBoard.
            self._tb = SummaryWriter(logdir=str(self.logdir), purge_step=self._purge_step,
                                     filename_suffix=f".{time.time_ns()}")
            self._purge_step = None
        return self._tb

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Appends ``{"step": step, **metrics}`` as one flushed line and logs each scalar.

        Values must be scalars (Python, numpy or JAX); integers stay integers, NaN/inf are written
        as JSON's NaN/Infinity. Raises ``ValueError`` naming a non-scalar key or a key "step".
        """
        if not self.enabled:
            return
        self._check_open()
        if "step" in metrics:
            raise ValueError("metrics must not contain the key 'step'; pass it as the step argument")
        step = int(step)
        record = {"step": step, **{str(k): _scalar(k, v) for k, v in metrics.items()}}
        self._file.write(dumps_line(record))
        self._file.flush()
        tb = self._summary_writer()
        if tb is not None:
            for key, value in record.items():
                if key != "step":
                    tb.add_scalar(key, value, global_step=step)
            tb.flush()

    def write_image(self, step: int, tag: str, image: Union[str, os.PathLike, np.ndarray]) -> None:
        """Logs an image to TensorBoard: a PNG path or an ``[H, W]``/``[H, W, C]`` array
        (uint8 0-255 or float 0-1, C in {1, 3, 4})."""
        if not self.enabled or not self._use_tensorboard:
            return
        self._check_open()
        if isinstance(image, (str, os.PathLike)):
            import matplotlib.image

            if not Path(image).exists():
                raise FileNotFoundError(f"image file {image} does not exist")
            image = matplotlib.image.imread(str(image))
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(f"image {tag!r} must be [H, W] or [H, W, C] with C in 1, 3, 4; got {image.shape}")
        self._summary_writer().add_image(tag, image, global_step=int(step), dataformats="HWC")
        self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drops JSON lines with step > ``step`` (and a partial last line); TensorBoard events past
        ``step`` are purged by the next event file. Call once on resume, before writing."""
        if not self.enabled:
            return
        self._check_open()
        step = int(step)
        self._file.close()
        write_jsonl(self.path, [r for r in read_metrics(self.path) if r["step"] <= step])
        self._file = open(self.path, "a", encoding="utf-8")
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._purge_step = step + 1

    def close(self) -> None:
        """Flushes and closes both outputs; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
