"""Whole runs with the scripted demo policy: results, report, resume, kill part-way, truncated lines."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_safety.backends import ScriptedBackend
from agent_safety.demo_policy import demo_reply
from agent_safety.run import run_experiment
from agent_safety.run_config import default_config
from agent_safety.store import DialogueStore, read_records, record_key

REPO = Path(__file__).resolve().parents[2]


def small_config():
    c = default_config()
    c.tasks.limit_per_kind = 2
    c.systems = ("autogen", "autogpt")
    c.attacks = ("none", "HI-Traits")
    c.defences = ("none",)
    c.rounds = 0
    c.batch_size = 3
    return c  # 4 tasks x 2 systems x 2 attacks = 16 dialogues


def keys(workdir):
    return [record_key(r) for r in read_records(Path(workdir) / "dialogues.jsonl")]


class FailAfter(ScriptedBackend):
    """The demo policy until `n` requests were answered, then an error (a crash mid-run)."""

    def __init__(self, n):
        super().__init__(self._reply_or_fail)
        self.n, self.answered = n, 0

    def _reply_or_fail(self, request):
        self.answered += 1
        if self.answered > self.n:
            raise RuntimeError("backend died")
        return demo_reply(request)


def test_run_writes_results_and_report_then_resumes_without_calls(tmp_path):
    report = run_experiment(small_config(), tmp_path, progress=False)
    assert report == tmp_path / "report.md"
    stored = keys(tmp_path)
    assert len(stored) == len(set(stored)) == 16
    text = report.read_text()
    assert "| autogen | HI-Traits | none | dangerous | 2 | 1.000 | 1.000 | 1.000 | 0.000 |" in text
    assert "| autogen | none | none | safe | 2 | 0.000 |" in text
    assert all((tmp_path / "plots" / f).stat().st_size > 1000
               for f in ("pdr.png", "jdr_by_round.png", "score_vs_danger.png"))
    record = read_records(tmp_path / "dialogues.jsonl")[0]
    assert record["backends"] == {"agents": "scripted:demo", "judge": "scripted:demo"}
    assert all(t["questionnaire"]["valid"] for t in record["turns"] if t["kind"] == "agent")
    before = (tmp_path / "dialogues.jsonl").read_bytes()
    never = ScriptedBackend(lambda r: pytest.fail("a finished dialogue was run again"))
    run_experiment(small_config(), tmp_path, agents=never, progress=False)
    assert (tmp_path / "dialogues.jsonl").read_bytes() == before and never.requests == []


def test_crash_part_way_then_rerun_loses_and_duplicates_nothing(tmp_path):
    # A chunk of 3 autogen dialogues takes 6 steps x 3 calls x 3 requests = 54 requests.
    with pytest.raises(RuntimeError, match="backend died"):
        run_experiment(small_config(), tmp_path, agents=FailAfter(60), progress=False)
    first = keys(tmp_path)
    assert len(first) == 3
    lines_before = (tmp_path / "dialogues.jsonl").read_text().splitlines()
    run_experiment(small_config(), tmp_path, agents=ScriptedBackend(demo_reply), progress=False)
    final = keys(tmp_path)
    assert len(final) == len(set(final)) == 16 and final[:3] == first
    assert (tmp_path / "dialogues.jsonl").read_text().splitlines()[:3] == lines_before


def test_truncated_last_line_is_dropped_and_repaired(tmp_path):
    run_experiment(small_config(), tmp_path, progress=False)
    path = tmp_path / "dialogues.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:10]) + lines[10][: len(lines[10]) // 2])  # killed mid-write
    assert len(read_records(path)) == 10
    store = DialogueStore(path)
    assert len(store.finished_keys) == 10 and path.read_text().endswith("\n")
    run_experiment(small_config(), tmp_path, progress=False)
    final = keys(tmp_path)
    assert len(final) == len(set(final)) == 16
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "dialogues.jsonl"
    path.write_text('{"key": 1}\nnot json\n{}\n')
    with pytest.raises(ValueError, match="dialogues.jsonl:2: not valid JSON"):
        read_records(path)


def test_store_refuses_duplicates(tmp_path):
    store = DialogueStore(tmp_path / "d.jsonl")
    record = {"key": {"task_id": "t", "system": "s", "attack": "a", "defence": "none", "seed": 0}}
    store.append(record)
    with pytest.raises(ValueError, match="already stored"):
        store.append(record)
    with pytest.raises(ValueError, match="'key'"):
        store.append({"turns": []})


def test_api_key_is_not_written(tmp_path):
    c = small_config()
    c.backend.api_key = "sk-secret-xyz"
    c.systems = ("autogpt",)
    c.attacks = ("none",)
    run_experiment(c, tmp_path, agents=ScriptedBackend(demo_reply), progress=False)
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".md"):
            assert "sk-secret-xyz" not in f.read_text()
    assert json.loads((tmp_path / "config.json").read_text())["backend"]["api_key"] == "<hidden>"


def test_sigkill_mid_run_then_rerun(tmp_path):
    """A real process killed with SIGKILL while dialogues are in flight; the rerun completes the grid."""
    overrides = ["--config.tasks.limit_per_kind=3", "--config.systems=('autogpt',)",
                 "--config.attacks=('none','HI')", "--config.defences=('none',)", "--config.batch_size=2",
                 "--config.backend.delay_s=0.02"]
    cmd = [sys.executable, str(REPO / "tools/psysafe.py"), f"--config={REPO / 'configs/psysafe/scripted.py'}",
           f"--workdir={tmp_path}", *overrides]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "dialogues.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not results.exists() or results.read_text().count("\n") < 2):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = keys(tmp_path)
    assert 2 <= len(killed_at) < 12, "the kill should land part-way through the 12 dialogues"
    c = small_config()
    c.tasks.limit_per_kind, c.systems, c.attacks, c.batch_size = 3, ("autogpt",), ("none", "HI"), 2
    run_experiment(c, tmp_path, agents=ScriptedBackend(demo_reply), progress=False)
    final = keys(tmp_path)
    assert len(final) == len(set(final)) == 12 and final[:len(killed_at)] == killed_at


def test_config_typos_fail_before_any_model_call(tmp_path):
    never = ScriptedBackend(lambda r: pytest.fail("no model call expected"))
    for field, value, message in [("attacks", ("none", "HI-trait"), "unknown attack mode"),
                                  ("defences", ("doctor+polce",), "unknown defence"),
                                  ("trait_vector", (1, 1, 1), "trait_vector"),
                                  ("systems", ("chatdev",), "unknown system")]:
        c = small_config()
        c[field] = value
        with pytest.raises(ValueError, match=message):
            run_experiment(c, tmp_path, agents=never, progress=False)
