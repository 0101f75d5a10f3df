"""GRPO checkpoints on the shared format: `<workdir>/checkpoints/step_00000010/` is a `common` checkpoint
(params + model config + tokenizer + metadata, loadable by `common.load_pretrained`, hence by
`agent_safety`) plus the optimiser state (`opt_state/`, orbax) and `trainer_state.json` (step, data
position, compute ledger). A step directory appears under its final name only when complete."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jax
from flax import nnx

from common.checkpoint.orbax_io import FORMAT, read_metadata, restore_params, save_checkpoint, save_params

STEP_DIR = re.compile(r"^step_(\d{8})$")


def step_dirs(workdir: str | Path) -> list[Path]:
    root = Path(workdir) / "checkpoints"
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir()), key=lambda p: p.name)


def latest_step_dir(workdir: str | Path) -> Path | None:
    dirs = step_dirs(workdir)
    return dirs[-1] if dirs else None


def save_trainer_checkpoint(workdir: str | Path, step: int, model, tokenizer, opt_state, trainer_state: dict,
                            *, keep: int, source: str | None = None) -> Path:
    root = Path(workdir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    partial = root / f"step_{step:08d}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    save_checkpoint(partial, model, tokenizer, step=step, source=source)
    save_params(partial / "opt_state", opt_state)
    if jax.process_index() == 0:
        (partial / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for old in step_dirs(workdir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    return final


def restore_trainer_checkpoint(step_dir: Path, params: nnx.State, opt_state) -> tuple[nnx.State, object, dict]:
    """Restores into the structure (and shardings) of the given params / optimiser state."""
    saved_format = read_metadata(step_dir).get("format")
    if saved_format != FORMAT:
        raise ValueError(
            f"{step_dir} was written in checkpoint format {saved_format!r}, not {FORMAT!r}: its optimiser state "
            "does not fit today's parameter layout, so the run cannot resume from it. Its parameters still load "
            "(common.load_pretrained): start a new run from them as the initial checkpoint.")
    as_target = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    target = jax.tree.map(as_target, nnx.to_pure_dict(params))
    restored = restore_params(step_dir / "params", target)
    nnx.replace_by_pure_dict(params, restored)
    opt_state = restore_params(step_dir / "opt_state", jax.tree.map(as_target, opt_state))
    trainer_state = json.loads((step_dir / "trainer_state.json").read_text())
    return params, opt_state, trainer_state
