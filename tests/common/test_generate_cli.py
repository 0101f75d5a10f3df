"""tools/generate.py: the command a newcomer runs to talk to a checkpoint."""

from pathlib import Path

import pytest

from tests.load_file import load_module

TOOL = Path(__file__).resolve().parents[2] / "tools" / "generate.py"


def load_tool():
    return load_module(TOOL, "generate_tool")


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
