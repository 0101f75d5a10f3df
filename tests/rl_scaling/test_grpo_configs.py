"""Config files are read by path and only choose: every one loads, none imports another, and the paper recipe
takes each size's layout from common.mesh_presets."""

import warnings
from pathlib import Path

import pytest

from common.config_file import load_config
from common.mesh_presets import PLANS, SIZES, get_mesh_preset, layout
from rl_scaling.data import default_data_root, problems_file
from rl_scaling.grpo.defaults import default_config, paper_recipe
from rl_scaling.grpo.setup import load_downstream_sets, load_pool, micro_batch_sequences, split_train_heldout

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
    assert (c.grpo.micro_batch_per_device, c.grpo.micro_batch_size, c.model.remat) == (
        plan.per_device_micro_batch, 0, on_slice.remat)  # per device: the same recipe splits over any slice
    assert micro_batch_sequences(c.grpo, data * fsdp) == on_slice.micro_batch
    assert not c.data.chat and not c.model.path.endswith("-Instruct")
    gpu = paper_recipe(size, "gpu,instruct")
    assert gpu.mesh.tensor == layout("8xh100", size).tensor and gpu.model.path.endswith("-Instruct")


def test_layouts_the_two_copies_disagreed_on():
    # The compiled plan ran 14B on v5p-64 at tensor 4 and 32B on v5p-128 at tensor 8, 2 sequences per chip.
    assert layout("v5p-64", "qwen2_5_14b").mesh == {"data": 1, "fsdp": 8, "tensor": 4}
    assert layout("v5p-128", "qwen2_5_32b").mesh == {"data": 1, "fsdp": 8, "tensor": 8}
    assert layout("v5p-64", "qwen2_5_7b").micro_batch == 64
    elsewhere = layout("v5e-64", "qwen2_5_7b")  # not planned: one sequence per device, remat
    assert (elsewhere.per_device_micro_batch, elsewhere.micro_batch, elsewhere.remat) == (1, 16, True)


def test_recipe_argument_is_checked():
    with pytest.raises(ValueError, match="unknown config argument"):
        paper_recipe("qwen2_5_7b", "tpu,chat")
    assert default_config().grpo.group_size == 8


# ---- every GRPO config gets its data: pool, held-out split, downstream sets (as the trainer's start does) ----

GRPO_CONFIGS = sorted((CONFIGS / "grpo").glob("*.py"))
needs_math_data = pytest.mark.skipif(not default_data_root().is_dir(), reason="no ../shared/data/math")


@needs_math_data
@pytest.mark.parametrize("path", GRPO_CONFIGS, ids=lambda p: p.stem)
def test_every_grpo_config_starts_on_its_data(path):
    from common.tokenizer import char_tokenizer

    cfg = load_config(path)
    cfg.data.chat = False  # the character tokenizer has no chat template
    cfg.eval.downstream_limit = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, heldout = split_train_heldout(cfg, load_pool(cfg))
        sets = load_downstream_sets(cfg, char_tokenizer())
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(heldout) == cfg.data.heldout_size and train
    if cfg.data.source == "gsm8k":  # the recipe's offline stand-in: no difficulties, said at start
        assert any("problems of gsm8k have no difficulty" in m and "file order" in m for m in messages), messages
        assert [p.id for p in train] == sorted((p.id for p in train), key=lambda i: int(i.rsplit("/", 1)[1]))
        missing = [n for n in cfg.eval.downstream.split(",") if not problems_file(n).is_file()]
        assert "math500" in cfg.eval.downstream.split(",") and set(sets) == set(cfg.eval.downstream.split(",")) - set(missing)
        assert all(any(f"eval.downstream {n!r} skipped: no file at {problems_file(n)}" in m for m in messages)
                   for n in missing)
    else:
        assert not messages


@needs_math_data
def test_curriculum_on_a_source_without_difficulties_stops_the_start(monkeypatch, tmp_path):
    cfg = default_config()
    cfg.data.source = "gsm8k"
    with pytest.raises(ValueError, match=r"data.curriculum=True needs a difficulty .* none of the 7473 problems of "
                                         r"gsm8k have one.*data.curriculum=False"):
        split_train_heldout(cfg, load_pool(cfg))
    monkeypatch.setenv("MATH_DATA_DIR", str(tmp_path))  # a data root without MATH-500
    cfg.eval.downstream = "math500"
    with pytest.raises(FileNotFoundError, match=f"math500 split 'test' not found at {tmp_path}/math500/test.jsonl"):
        load_downstream_sets(cfg, None)  # eval.downstream_missing = "error", the default
    cfg.eval.downstream_missing = "skip"
    with pytest.warns(UserWarning, match=f"eval.downstream 'math500' skipped: no file at {tmp_path}/math500/test.jsonl"):
        assert load_downstream_sets(cfg, None) == {}
    cfg.eval.downstream_missing = "ignore"
    with pytest.raises(ValueError, match=r"unknown eval.downstream_missing 'ignore'; choices: \['error', 'skip'\]"):
        load_downstream_sets(cfg, None)
