"""tools/: every command is a script there, run as `python tools/<name>.py` from any directory; no package is a
command (`__main__`) and nothing edits sys.path to find the repository."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "rl_scaling", "agent_safety")
# libtpu's side directory (tools/setup.sh --tpu-aot) is found this way; it is not the repository.
SYS_PATH_ALLOWED = {REPO / "common" / "aot" / "topology.py"}
COMMANDS = ("train_grpo", "grid", "fit_scaling_law", "plan_size", "time_plan", "memory_plan", "miniature", "psysafe",
            "psysafe_report", "psysafe_checkpoints", "convert_hf_to_orbax", "device_check")


def _sources(*folders):
    return [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]


def test_no_package_is_a_command():
    for path in _sources(*PACKAGES):
        assert path.name != "__main__.py", path
        assert '__name__ == "__main__"' not in path.read_text(), f"{path}: a command belongs in tools/"


def test_nothing_edits_sys_path():
    for path in _sources(*PACKAGES, "tools"):
        if path not in SYS_PATH_ALLOWED:
            text = path.read_text()
            assert "sys.path.insert" not in text and "sys.path.append" not in text, path


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_from_another_directory(name, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    first_line = (REPO / "tools" / f"{name}.py").read_text().split('"""')[1].splitlines()[0]
    assert done.returncode in (0, 1), done.stderr  # absl's --help exits 1 after printing
    assert first_line[:40] in done.stdout, done.stdout[-2000:]
