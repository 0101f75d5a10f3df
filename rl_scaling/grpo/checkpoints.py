"""GRPO checkpoints on the shared format: `<workdir>/checkpoints/step_00000010/` is a `common` checkpoint
(params + model config + tokenizer + metadata, loadable by `common.load_pretrained`, hence by
`agent_safety`) plus the optimiser state (`opt_state/`, orbax) and `trainer_state.json` (step, data
position, compute ledger).

Saves go through an orbax `CheckpointManager` and are asynchronous: `TrainerCheckpoints.save` returns once
the arrays are copied to host memory, and the next training step runs while every process writes its shards
into `step_XXXXXXXX.orbax-checkpoint-tmp`; when all are done, process 0 renames it to `step_XXXXXXXX`. A step
directory under its final name is therefore complete; a save killed half-way leaves only the temporary
directory, which the next run removes (`remove_unfinished_saves`: process 0 alone, between barriers). The
`keep` newest steps are kept. Step directories written before the manager (the same files, renamed from
`step_XXXXXXXX.partial`) read the same way.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from common.checkpoint.orbax_io import FORMAT, checkpoint_metadata, param_tree, read_metadata, restore_params
from common.distributed import barrier, is_main_process

STEP_DIR = re.compile(r"^step_(\d{8})$")
# Left by a save that did not finish: orbax's temporary directory, or the `.partial` of the code before it.
UNFINISHED = re.compile(r"^step_\d{8}(\.partial|\.orbax-checkpoint-tmp.*)$")


def step_dirs(workdir: str | Path) -> list[Path]:
    """The complete step directories of a run, oldest first."""
    root = Path(workdir) / "checkpoints"
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir()), key=lambda p: p.name)


def latest_step_dir(workdir: str | Path) -> Path | None:
    dirs = step_dirs(workdir)
    return dirs[-1] if dirs else None


def remove_unfinished_saves(root: Path) -> list[str]:
    """Deletes the directories of saves that never finished under `root`; returns their names (on process 0;
    an empty list elsewhere). Every process calls it: process 0 deletes while the others wait at a barrier, so
    no two processes delete the same directory and none starts a save into one being deleted."""
    barrier(f"unfinished-saves-scan:{root}")
    removed = []
    if is_main_process() and root.exists():
        for path in sorted(root.iterdir()):
            if UNFINISHED.match(path.name):
                shutil.rmtree(path)
                removed.append(path.name)
    barrier(f"unfinished-saves-removed:{root}")
    return removed


# ---- the step's own files, written in the save's background part ----------------------------------------------

def write_step_files(item_dir: Path, files: dict[str, str], tokenizer) -> None:
    """Writes `files` (name -> text) into the step directory that holds `item_dir`, and the tokenizer into
    `item_dir` (the step's `tokenizer/`). Process 0 only."""
    for name, text in files.items():
        (item_dir.parent / name).write_text(text)
    tokenizer.save_pretrained(str(item_dir))


@dataclasses.dataclass
class StepFilesSave(ocp.args.CheckpointArgs):
    """The files a step directory holds beside its orbax trees: name -> text, and the tokenizer."""

    files: dict[str, str]
    tokenizer: object


class StepFilesHandler(ocp.AsyncCheckpointHandler):
    """Saves `StepFilesSave` as the item `tokenizer`. The files' names are the layout `common` checkpoints
    have always had (`metadata.json` beside `params/`), so they go to the item's parent, the step directory
    (orbax's temporary one until the save commits)."""

    def save(self, directory, args: StepFilesSave) -> None:
        if is_main_process():
            write_step_files(Path(directory), args.files, args.tokenizer)

    async def _save_in_background(self, directory, args: StepFilesSave) -> None:
        self.save(directory, args)

    async def async_save(self, directory, args: StepFilesSave):
        return [ocp.future.CommitFutureAwaitingContractedSignals(self._save_in_background(directory, args),
                                                                 name="step_files")]

    def restore(self, directory, args=None):
        raise NotImplementedError("step files are read as files (restore_trainer_checkpoint, load_pretrained)")


ocp.args.register_with_handler(StepFilesHandler, for_save=True, for_restore=True)(StepFilesSave)


# ---- save and restore ----------------------------------------------------------------------------------------

class TrainerCheckpoints:
    """The run's checkpoint directory. Construct it on every process (it removes unfinished saves first);
    `save` on every process; `wait` before the process exits."""

    def __init__(self, workdir: str | Path, *, keep: int):
        self.root = Path(workdir).absolute() / "checkpoints"
        for name in remove_unfinished_saves(self.root):
            tqdm.write(f"removed the unfinished save {self.root / name}")
        options = ocp.CheckpointManagerOptions(
            step_name_format=ocp.step.standard_name_format(step_prefix="step", step_format_fixed_length=8),
            preservation_policy=ocp.checkpoint_managers.LatestN(keep) if keep > 0 else None,
            enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.root, options=options)

    def save(self, step: int, model, tokenizer, opt_state, trainer_state: dict, *, source: str | None) -> Path:
        """Starts the save of `step` and returns its final directory, which appears once the save is complete.
        Waits for the previous save first. `model`'s parameters and `opt_state` may be donated once this
        returns (orbax has copied them to host memory)."""
        files = {"model_config.json": model.config.to_json(),
                 "metadata.json": json.dumps(checkpoint_metadata(model, step, source), indent=2),
                 "trainer_state.json": json.dumps(trainer_state, indent=2)}
        args = ocp.args.Composite(params=ocp.args.StandardSave(param_tree(model)),
                                  opt_state=ocp.args.StandardSave(opt_state),
                                  tokenizer=StepFilesSave(files, tokenizer))
        self.manager.save(step, args=args, force=True)
        return self.root / f"step_{step:08d}"

    def wait(self) -> None:
        """Blocks until the save in flight (if any) is complete on every process."""
        self.manager.wait_until_finished()


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
