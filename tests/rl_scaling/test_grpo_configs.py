"""Config files are read by path and only choose: every one loads, none imports another, and the paper recipe
takes each size's layout from common.mesh_presets."""

from pathlib import Path

import pytest

from common.config_file import load_config
from common.mesh_presets import PLANS, SIZES, get_mesh_preset, layout
from rl_scaling.grpo.defaults import default_config, paper_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG_FILES = sorted(CONFIGS.rglob("*.py"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_file_loads_by_path_and_imports_no_other(path):
    assert load_config(path) is not None
    text = path.read_text()
    assert "from configs" not in text and "import configs" not in text


def test_configs_is_not_a_package():
    assert not (CONFIGS / "__init__.py").exists()


@pytest.mark.parametrize("size", SIZES)
def test_paper_recipe_is_laid_out_as_the_memory_plan_compiled_it(size):
    plan = PLANS[size]
    on_slice = layout(plan.slice, size)
    data, fsdp, _ = get_mesh_preset(plan.slice).degrees(size)
    assert on_slice.micro_batch == plan.per_device_micro_batch * data * fsdp
    c = load_config(CONFIGS / "grpo" / f"{size}.py", "tpu,base")
    assert dict(c.mesh) == {"data": 1, "fsdp": -1, "tensor": on_slice.tensor}
    assert (c.grpo.micro_batch_size, c.model.remat) == (on_slice.micro_batch, on_slice.remat)
    assert not c.data.chat and not c.model.path.endswith("-Instruct")
    gpu = paper_recipe(size, "gpu,instruct")
    assert gpu.mesh.tensor == layout("8xh100", size).tensor and gpu.model.path.endswith("-Instruct")


def test_layouts_the_two_copies_disagreed_on():
    # The compiled plan ran 14B on v5p-64 at tensor 4 and 32B on v5p-128 at tensor 8, 2 sequences per chip.
    assert layout("v5p-64", "qwen2_5_14b").mesh == {"data": 1, "fsdp": 8, "tensor": 4}
    assert layout("v5p-128", "qwen2_5_32b").mesh == {"data": 1, "fsdp": 8, "tensor": 8}
    assert (layout("v5p-64", "qwen2_5_7b").micro_batch, layout("v5p-8", "qwen2_5_1_5b").rollout_chunk) == (64, 1024)
    elsewhere = layout("v5e-64", "qwen2_5_7b")  # not planned: one sequence per device, remat, no chunk known
    assert (elsewhere.micro_batch, elsewhere.remat, elsewhere.rollout_chunk) == (16, True, None)


def test_recipe_argument_is_checked():
    with pytest.raises(ValueError, match="unknown config argument"):
        paper_recipe("qwen2_5_7b", "tpu,chat")
    assert default_config().grpo.group_size == 8
