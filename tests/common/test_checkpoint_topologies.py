"""Checkpoints across topologies: save on one mesh, restore on another (8 -> 4 devices, fsdp -> tensor, one
process -> two); a GRPO run killed (SIGKILL) during an asynchronous save leaves the previous checkpoint
latest and loadable, and the next run removes the unfinished save and resumes; and a GRPO
checkpoint goes through `common.load_pretrained` and the Hugging Face export to transformers with the same
logits."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from common.checkpoint.orbax_io import is_checkpoint_dir, load_checkpoint, save_checkpoint
from common.config import get_preset
from common.model import Decoder
from common.sharding import logical_to_spec, make_mesh, named_sharding
from tests.multiprocess import REPO_ROOT, process_env, run_processes

RESTORE_WORKER = Path(__file__).with_name("checkpoint_restore_worker.py")
CRASH_WORKER = Path(__file__).with_name("checkpoint_crash_worker.py")
TOKENS = np.random.RandomState(0).randint(1, 512, (8, 12)).astype(np.int32)


def _sharded_model(mesh, seed=0):
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(seed))
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        var[...] = jax.device_put(var[...], named_sharding(mesh, var.get_metadata()["logical_axes"], var.shape))
    return model


def _params(model):
    return {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.fixture(scope="module")
def saved_on_eight(tmp_path_factory):
    """The tiny decoder saved from an 8-device fsdp mesh, with its logits on TOKENS."""
    mesh = make_mesh({"fsdp": 8}, jax.devices()[:8])
    model = _sharded_model(mesh)
    assert len(model.layers.mlp.gate_up_kernel[...].sharding.device_set) == 8
    with jax.set_mesh(mesh):
        logits = np.asarray(jax.jit(lambda t: model(t))(TOKENS))
    directory = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model, step=7)
    return directory, _params(model), logits


@pytest.mark.parametrize("shape", [{"fsdp": 4}, {"tensor": 4}, {"fsdp": 2, "tensor": 2}, {"data": 2, "fsdp": 2}],
                         ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_restore_on_a_smaller_differently_split_mesh(saved_on_eight, shape):
    directory, params, logits = saved_on_eight
    mesh = make_mesh(shape, jax.devices()[:4])
    model = load_checkpoint(directory, mesh=mesh)
    q = model.layers.attn.qkv_kernel[...]
    assert q.sharding.mesh.devices.size == 4
    assert q.sharding.spec == logical_to_spec(("layers", "embed", "kv_heads", None, "head_dim"), q.shape, mesh)
    restored = _params(model)
    assert restored.keys() == params.keys()
    for key in params:
        np.testing.assert_array_equal(restored[key], params[key], err_msg=key)
    with jax.set_mesh(mesh):
        np.testing.assert_allclose(np.asarray(jax.jit(lambda t: model(t))(TOKENS)), logits, rtol=1e-5, atol=1e-5)


def test_restore_from_one_process_into_two(saved_on_eight):
    directory, _, logits = saved_on_eight
    outputs = run_processes(RESTORE_WORKER, [str(directory), "tensor=2"], num_processes=2, devices_per_process=4)
    for out in outputs:
        report = json.loads(re.search(r"^REPORT (.*)$", out, re.M).group(1))
        assert report["devices"] == 8 and report["q_spec"] == repr(PartitionSpec(None, "fsdp", "tensor", None, None))
        np.testing.assert_allclose(np.asarray(report["logits_sum"]), logits.sum(axis=(1, 2)), rtol=1e-4)
        np.testing.assert_allclose(np.asarray(report["logits_00"]), logits[0, 0], rtol=1e-5, atol=1e-5)


# ---- a save that dies half-way -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory):
    """A GRPO run checkpoints at step 1, then is killed (SIGKILL, no clean-up) during step 3 while its
    asynchronous save of step 2 is in flight."""
    workdir = tmp_path_factory.mktemp("crash")
    env = process_env(1, 0, 8, None)
    out = subprocess.run([sys.executable, str(CRASH_WORKER), str(workdir)], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == -9, out.stdout[-2000:] + out.stderr[-3000:]
    return workdir


def test_a_killed_save_leaves_the_previous_checkpoint_latest_and_loadable(crashed_run):
    from rl_scaling.grpo.checkpoints import latest_step_dir, restore_trainer_checkpoint

    root = crashed_run / "checkpoints"
    names = sorted(p.name for p in root.iterdir())
    assert names == ["step_00000001", "step_00000002.orbax-checkpoint-tmp"], names  # step 2 never committed
    latest = latest_step_dir(crashed_run)
    assert latest.name == "step_00000001" and is_checkpoint_dir(latest)
    model = load_checkpoint(latest)
    assert np.isfinite(np.asarray(model(TOKENS[:, :5] % model.config.vocab_size))).all()
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["step"] == 1
    # the optimiser state restores too (into a fresh structure, as the trainer does on resume)
    from rl_scaling.grpo.train_step import make_optimizer

    graphdef, params = nnx.split(model)
    optimizer = make_optimizer(1e-3, 0.0, 1.0)
    params, opt_state, trainer_state = restore_trainer_checkpoint(latest, params, optimizer.init(params))
    assert trainer_state["step"] == 1
    assert int(jax.tree.leaves(opt_state)[0]) == 4  # Adam's count: 4 updates (mini-batches) in step 1


def test_an_unfinished_async_orbax_save_is_never_visible_under_its_name(tmp_path):
    # StandardCheckpointer saves in a background thread into a temporary directory and renames it on commit.
    script = (
        "import os, sys, numpy as np, jax.numpy as jnp, orbax.checkpoint as ocp\n"
        "c = ocp.StandardCheckpointer()\n"
        "c.save(sys.argv[1] + '/done', {'w': jnp.ones((4, 4))}); c.wait_until_finished()\n"
        "c.save(sys.argv[1] + '/killed', {'w': jnp.ones((4096, 4096))})\n"
        "os._exit(17)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, env=process_env(1, 0, 1, None))
    assert out.returncode == 17, out.stderr[-2000:]
    assert not (tmp_path / "killed").exists()
    import orbax.checkpoint as ocp

    restored = ocp.StandardCheckpointer().restore(tmp_path / "done")
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.ones((4, 4)))


@pytest.mark.slow  # a second GRPO process: ~40 s on 2 cores
def test_the_next_run_removes_the_unfinished_saves_and_resumes_from_the_survivor(crashed_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(crashed_run, workdir)
    (workdir / "checkpoints" / "step_00000005.partial" / "params").mkdir(parents=True)  # left by the code before
    out = subprocess.run([sys.executable, str(CRASH_WORKER), str(workdir), "--no-crash"], cwd=REPO_ROOT,
                         env=process_env(1, 0, 8, None), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert re.search(r"resumed from .*step_00000001 \(step 1\)", log)
    assert re.findall(r"removed the unfinished save .*/(\S+)", log) == ["step_00000002.orbax-checkpoint-tmp",
                                                                       "step_00000005.partial"]
    # nothing else under checkpoints/; keep=2 retired step 1
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["step_00000002", "step_00000003"]


# ---- GRPO checkpoint -> agent_safety's loader -> Hugging Face -> transformers ---------------------------------

def test_grpo_checkpoint_to_transformers_gives_the_same_logits(crashed_run, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from common import load_pretrained
    from common.checkpoint.hf_export import save_hf
    from rl_scaling.grpo.checkpoints import latest_step_dir
    from tests.common.hf_reference import rel_err

    step_dir = latest_step_dir(crashed_run)
    model, tokenizer = load_pretrained(step_dir)  # what agent_safety calls
    ids = np.asarray([tokenizer("What is 7?")["input_ids"], tokenizer("What is 3?")["input_ids"]], np.int32)
    ours = np.asarray(model(ids))
    save_hf(model, tmp_path / "hf", tokenizer)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    # float32 agrees to 5e-7 relative; RMSNorm with a doubled epsilon: 3e-4
    assert rel_err(ours, theirs) <= 1e-5
