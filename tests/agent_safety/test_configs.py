"""The PsySafe configs: each one builds its experiment grid, the local demo needs no path (it names the
offline model), and the README's newcomer command names a config that exists."""

import importlib.util
import re
from pathlib import Path

import pytest

from agent_safety.run import experiment_grid
from agent_safety.tasks import load_tasks
from common.api import KNOWN_MODELS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs/psysafe").glob("*.py"))


def load_config(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_builds_its_grid(path):
    c = load_config(path)
    tasks = load_tasks(c.tasks.source, c.tasks.path, tuple(c.tasks.kinds), c.tasks.limit_per_kind)
    assert experiment_grid(c, tasks)
    assert 0 <= c.max_invalid_verdict_share <= 1 and c.backend.max_attempts >= 1


def test_local_demo_names_the_offline_model_and_a_path_overrides_it():
    c = load_config(REPO / "configs/psysafe/smollm2_demo.py")
    assert c.backend.kind == "jax" and c.backend.model_path == "smollm2-135m-instruct" in KNOWN_MODELS
    c.model_path = "/models/my-checkpoint"
    assert c.backend.model_path == "/models/my-checkpoint"


def test_readme_newcomer_command_names_an_existing_config():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## PsySafe", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"^python tools/psysafe\.py .*$", section, re.MULTILINE)
    config = re.search(r"--config=(\S+)", command).group(1)
    assert (REPO / config).is_file() and "--config.model_path" not in command
    assert "1 = inject the dark trait here" in section and "0 for dark" in section
