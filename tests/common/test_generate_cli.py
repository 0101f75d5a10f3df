"""tools/generate.py: the command a newcomer runs to talk to a checkpoint."""

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "generate.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("generate_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chat_one_shot_answers(smollm2_dir, capsys):
    tool = load_tool()
    assert tool.main(["--model", str(smollm2_dir), "--chat", "What is 7 + 5?", "--max-new-tokens", "48"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("assistant> ") and "12" in out


def test_requires_a_prompt():
    with pytest.raises(SystemExit):
        load_tool().parse_args(["--model", "x"])


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_tool().main(["--model", str(tmp_path / "nope"), "--prompt", "hi"])
