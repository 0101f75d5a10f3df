"""The commands that start a GRPO run on a Cloud TPU slice or a GPU host, from a config and a mesh preset.

    python tools/launch.py --config=configs/grpo/base.py --preset=v5p-64 --size=qwen2_5_7b \
        --name=grpo-7b --project=my-project --bucket=my-bucket --dry-run
    python tools/launch.py <the same arguments> --recreate --dry-run    # after the slice was PREEMPTED

--dry-run prints every command (docs/pod_guide.md walks through the same ones); without it each step
is run in order and the tool stops at the first failure. On a TPU slice every worker runs the same
command with QRR_DISTRIBUTED=auto (common.distributed.initialize finds the other workers), the mesh
degrees and micro-batch come from common/mesh_presets.py (the memory plan's choices), and the run directory is
a Cloud Storage bucket mounted at the same path on every worker (gcsfuse), so checkpoints written by all
hosts land in one place and a restarted job resumes from them. The slice is a queued resource (--spot: a Spot
one); the model is converted once, by worker 0, into the bucket (tools/convert_hf_to_orbax.py), and every
worker reads only its shards from there. --recreate prints the steps that bring a preempted slice back and
resume the run: delete the queued resource, ask for it again, ship, install, mount, start.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import subprocess
import sys
from pathlib import Path

from common.mesh_presets import SIZES, MeshPreset, get_mesh_preset, layout

REPO_ROOT = Path(__file__).resolve().parents[1]

CODE_TARBALL = "/tmp/qrr-code.tar.gz"
DATA_TARBALL = "/tmp/qrr-data.tar.gz"
REMOTE_REPO = "$HOME/qrr"
REMOTE_DATA = "$HOME/qrr-data/math"
MOUNT = "/mnt/qrr-bucket"  # the bucket's mount point on every worker
LOG = "$HOME/grpo.log"


@dataclasses.dataclass(frozen=True)
class Step:
    title: str
    commands: tuple[str, ...]


def hf_repo(size: str, variant: str) -> str:
    """Hub name of a Qwen2.5 size: qwen2_5_7b, instruct -> Qwen/Qwen2.5-7B-Instruct."""
    if size not in SIZES:
        raise KeyError(f"unknown size {size!r}; known: {SIZES}")
    if variant not in ("base", "instruct"):
        raise ValueError(f"variant must be 'base' or 'instruct', got {variant!r}")
    params = size.removeprefix("qwen2_5_").replace("_", ".").upper()
    return f"Qwen/Qwen2.5-{params}" + ("-Instruct" if variant == "instruct" else "")


def jax_version() -> str:
    from importlib import metadata

    return metadata.version("jax")


def run_overrides(preset: MeshPreset, size: str, config: str, model_dir: str, workdir: str,
                  sets: list[str]) -> list[str]:
    """`tools/train_grpo.py` arguments: config, workdir, the size's layout on the preset (mesh, the memory
    plan's micro-batch and remat: common.mesh_presets.layout), bfloat16 compute, then the user's --set
    overrides (last wins)."""
    plan = layout(preset, size)
    args = [f"--config={config}", f"--workdir={workdir}", f"--config.model.path={model_dir}",
            "--config.model.dtype=bfloat16", f"--config.model.remat={plan.remat}",
            f"--config.grpo.micro_batch_size={plan.micro_batch}"]
    args += [f"--config.mesh.{axis}={n}" for axis, n in plan.mesh.items()]
    return args + [f"--config.{s}" for s in sets]


def tpu_steps(a, preset: MeshPreset) -> list[Step]:
    zone = a.zone or preset.zone
    where = f"--zone={zone} --project={a.project}"
    ssh = lambda worker: f"gcloud compute tpus tpu-vm ssh {a.name} {where} --worker={worker} --command="  # noqa: E731
    queued = "gcloud compute tpus queued-resources"
    repo = hf_repo(a.size, a.variant)
    hf_dir, model_dir = f"{MOUNT}/hf/{repo.split('/')[1]}", f"{MOUNT}/models/{repo.split('/')[1]}"
    workdir = f"{MOUNT}/runs/{a.name}"
    train = " ".join(run_overrides(preset, a.size, a.config, model_dir, workdir, a.set))
    install = (f"set -e; sudo apt-get -qq update; sudo apt-get -qq install -y python3-venv; "
               f"mkdir -p {REMOTE_REPO} {REMOTE_DATA}; tar -xzf $HOME/qrr-code.tar.gz -C {REMOTE_REPO}; "
               f"tar -xzf $HOME/qrr-data.tar.gz -C {REMOTE_DATA}; cd {REMOTE_REPO}; python3 -m venv .venv; "
               f".venv/bin/pip install -q -U pip; "
               f'.venv/bin/pip install -q -e . "jax[tpu]=={jax_version()}"')
    mount = ("set -e; export GCSFUSE_REPO=gcsfuse-$(lsb_release -c -s); "
             "echo \"deb https://packages.cloud.google.com/apt $GCSFUSE_REPO main\" | "
             "sudo tee /etc/apt/sources.list.d/gcsfuse.list; "
             "curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -; "
             "sudo apt-get -qq update; sudo apt-get -qq install -y gcsfuse; "
             f"sudo mkdir -p {MOUNT}; sudo chown $USER {MOUNT}; "
             f"gcsfuse --implicit-dirs --rename-dir-limit=1000000 {a.bucket} {MOUNT}")
    convert = (f"cd {REMOTE_REPO} && test -f {model_dir}/metadata.json || (.venv/bin/hf download {repo} "
               f"--local-dir {hf_dir} && .venv/bin/python tools/convert_hf_to_orbax.py --hf {hf_dir} --out {model_dir})")
    start = (f"cd {REMOTE_REPO} && QRR_DISTRIBUTED=auto MATH_DATA_DIR={REMOTE_DATA} setsid nohup "
             f".venv/bin/python tools/train_grpo.py {train} > {LOG} 2>&1 < /dev/null &")
    state = f"{queued} describe {a.name} {where} --format='value(state.state)'"
    steps = {
        "check": Step("Check that the run fits the slice's memory (on your machine, no TPU needed)", (
            f"JAX_PLATFORMS=cpu python tools/memory_plan.py --check --no-compile --config={a.config} "
            f"--sizes={a.size} --presets={preset.name}",)),
        "bucket": Step("Create the bucket for logs, checkpoints and the model (once; hierarchical namespace = "
                       "atomic renames)", (
            f"gcloud storage buckets create gs://{a.bucket} --project={a.project} --location={a.region or zone[:-2]} "
            "--uniform-bucket-level-access --enable-hierarchical-namespace",)),
        "recreate": Step("The slice was PREEMPTED: delete its queued resource (the bucket keeps checkpoints and "
                         "model)", (f"{queued} delete {a.name} {where} --force --quiet",)),
        "slice": Step(f"Ask for the TPU slice ({preset.accelerator_type}: {preset.num_devices} chips on "
                      f"{preset.num_hosts} worker(s)) as a{' Spot' if a.spot else ''} queued resource, and wait "
                      "until it is ACTIVE", (
            f"{queued} create {a.name} --node-id={a.name} {where} --accelerator-type={preset.accelerator_type} "
            f"--runtime-version={preset.runtime_version}" + (" --spot" if a.spot else ""),
            f'until [ "$({state})" = ACTIVE ]; do sleep 60; done')),
        "ship": Step("Ship the code and the math data to every worker", (
            f"git archive --format=tar.gz --output={CODE_TARBALL} HEAD",
            f"tar -czf {DATA_TARBALL} -C ../shared/data/math .",
            f"gcloud compute tpus tpu-vm scp {CODE_TARBALL} {DATA_TARBALL} {a.name}:~ {where} --worker=all")),
        "install": Step("Install the package and JAX for TPU on every worker", (ssh("all") + shlex.quote(install),)),
        "mount": Step(f"Mount gs://{a.bucket} at {MOUNT} on every worker", (ssh("all") + shlex.quote(mount),)),
        "model": Step(f"Convert {repo} once, on worker 0, into the bucket (skipped when it is there): the HF files "
                      "go to the bucket, not to a worker's disk; every worker then reads only its shards", (
            ssh("0") + shlex.quote(convert),)),
        "start": Step("Start the run on every worker (rerun this step to resume from the latest checkpoint)",
                      (ssh("all") + shlex.quote(start),)),
        "watch": Step("Follow it: the slice's state, worker 0's log, and TensorBoard on the bucket", (
            state,
            f"gcloud compute tpus tpu-vm ssh {a.name} {where} --worker=0 --command={shlex.quote(f'tail -f {LOG}')}",
            f"tensorboard --logdir=gs://{a.bucket}/runs/{a.name}")),
        "delete": Step("Delete the slice when the run is DONE (checkpoints and the model stay in the bucket)", (
            f"{queued} delete {a.name} {where} --force --quiet",)),
    }
    order = RECREATE_STEPS if a.recreate else FULL_STEPS
    return [steps[key] for key in order]


# Which steps a launch runs, and which bring a preempted slice back: the run resumes from its checkpoints.
FULL_STEPS = ("check", "bucket", "slice", "ship", "install", "mount", "model", "start", "watch", "delete")
RECREATE_STEPS = ("recreate", "slice", "ship", "install", "mount", "start", "watch")


def gpu_steps(a, preset: MeshPreset) -> list[Step]:
    model_dir = f"models/{hf_repo(a.size, a.variant).split('/')[1]}"
    workdir = f"runs/{a.name}"
    train = " ".join(run_overrides(preset, a.size, a.config, model_dir, workdir, a.set))
    return [
        Step("Check that the run fits the GPUs' memory", (
            f"JAX_PLATFORMS=cpu python tools/memory_plan.py --check --no-compile --config={a.config} "
            f"--sizes={a.size} --presets={preset.name}",)),
        Step("Install (in the repository, on the GPU host): the cuda extra is JAX for CUDA 12 at the pinned version", (
            "python3 -m venv .venv",
            '.venv/bin/pip install -e ".[cuda]"',
            f".venv/bin/hf download {hf_repo(a.size, a.variant)} --local-dir {model_dir}")),
        Step("Or the same inside Docker (the CUDA libraries come from the jax[cuda12] wheels)", (
            "docker run --gpus all --ipc=host -v \"$PWD\":/qrr -v \"$(realpath ../shared/data/math)\":/data/math -w /qrr "
            f"python:3.11 bash -c {shlex.quote(f'pip install -e .[cuda] && MATH_DATA_DIR=/data/math python tools/train_grpo.py {train}')}",)),
        Step("Start the run (rerun to resume from the latest checkpoint)", (
            f"mkdir -p runs && nohup .venv/bin/python tools/train_grpo.py {train} > {workdir}.log 2>&1 &",)),
        Step("Several GPU hosts: the same command on each, with its process id", (
            "QRR_COORDINATOR=<host0>:8476 QRR_NUM_PROCESSES=<hosts> QRR_PROCESS_ID=<0..hosts-1> "
            f".venv/bin/python tools/train_grpo.py {train}",)),
        Step("Follow it", (f"tensorboard --logdir={workdir}",)),
    ]


def launch_steps(a) -> list[Step]:
    preset = get_mesh_preset(a.preset)
    if preset.platform == "tpu":
        for flag in ("project", "bucket"):
            if not getattr(a, flag):
                raise SystemExit(f"--{flag} is required for a TPU slice ({preset.name})")
        return tpu_steps(a, preset)
    return gpu_steps(a, preset)


def render(steps: list[Step]) -> str:
    out = []
    for i, step in enumerate(steps):
        out.append(f"# {i}. {step.title}")
        out.extend(step.commands)
        out.append("")
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/grpo/base.py", help="GRPO config file, relative to the repository")
    p.add_argument("--preset", required=True, help="mesh preset (common/mesh_presets.py), e.g. v5p-64, 8xh100")
    p.add_argument("--size", required=True, choices=SIZES)
    p.add_argument("--variant", default="instruct", choices=("base", "instruct"))
    p.add_argument("--name", default="grpo", help="TPU VM / run name")
    p.add_argument("--project", default="", help="Google Cloud project (TPU)")
    p.add_argument("--zone", default="", help="zone (default: the preset's)")
    p.add_argument("--region", default="", help="bucket location (default: the zone's region)")
    p.add_argument("--bucket", default="", help="Cloud Storage bucket name, without gs:// (TPU)")
    p.add_argument("--spot", action="store_true", help="a Spot slice (preemptible; the run resumes)")
    p.add_argument("--recreate", action="store_true",
                   help="after PREEMPTED: the steps that ask for the slice again and resume the run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override, e.g. --set data.source=gsm8k (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = launch_steps(args)
    if args.dry_run:
        print(render(steps), end="")
        return 0
    for i, step in enumerate(steps):
        print(f"# {i}. {step.title}", flush=True)
        for command in step.commands:
            print(f"$ {command}", flush=True)
            subprocess.run(command, shell=True, check=True, cwd=REPO_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
