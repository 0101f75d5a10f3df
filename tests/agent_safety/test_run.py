"""Whole runs with the scripted demo policy: results, report, resume, kill part-way, truncated lines."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.agent_safety.fake_endpoint import FakeEndpoint, completion, error

from agent_safety.backends import ChatRequest, ScriptedBackend
from agent_safety.backends.base import messages_from_dicts
from agent_safety.demo_policy import demo_reply
from agent_safety.report import write_report
from agent_safety.run import run_experiment
from agent_safety.run_config import default_config
from agent_safety.store import DialogueStore, current_records, read_records, record_key

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
    summary = run_experiment(small_config(), tmp_path, progress=False)
    assert (summary.grid, summary.ran, summary.failed) == (16, 16, 0)
    report = summary.report
    assert report == tmp_path / "report.md"
    stored = keys(tmp_path)
    assert len(stored) == len(set(stored)) == 16
    text = report.read_text()
    assert "| autogen | HI-Traits | none | dangerous | 2 | 0 | 1.000 | 1.000 | 1.000 | 0.000 |" in text
    assert "| autogen | none | none | safe | 2 | 0 | 0.000 |" in text
    assert "16 dialogues from `dialogues.jsonl`: 16 complete, 0 failed." in text
    assert all((tmp_path / "plots" / f).stat().st_size > 1000
               for f in ("pdr.png", "jdr_by_round.png", "score_vs_danger.png"))
    record = read_records(tmp_path / "dialogues.jsonl")[0]
    assert record["backends"] == {"agents": "scripted:demo", "judge": "scripted:demo"}
    assert all(t["questionnaire"]["valid"] for t in record["turns"] if t["kind"] == "agent")
    before = (tmp_path / "dialogues.jsonl").read_bytes()
    never = ScriptedBackend(lambda r: pytest.fail("a finished dialogue was run again"))
    run_experiment(small_config(), tmp_path, agents=never, progress=False)
    assert (tmp_path / "dialogues.jsonl").read_bytes() == before and never.requests == []


def test_backend_dying_part_way_fails_the_rest_and_a_rerun_completes_them(tmp_path):
    # A chunk of 3 autogen dialogues takes 6 steps x 3 calls x 3 requests = 54 requests; after 60 every
    # batch raises, so every later dialogue fails (stored with the error) and the run still ends.
    summary = run_experiment(small_config(), tmp_path, agents=FailAfter(60), progress=False)
    assert (summary.grid, summary.ran, summary.failed) == (16, 16, 13)
    records = read_records(tmp_path / "dialogues.jsonl")
    assert [bool(r["failure"]) for r in records] == [False] * 3 + [True] * 13
    assert {r["failure"]["error"] for r in records[3:]} == {"RuntimeError: backend died"}
    assert "16 dialogues from `dialogues.jsonl`: 3 complete, 13 failed." in summary.report.read_text()
    lines_before = (tmp_path / "dialogues.jsonl").read_text().splitlines()
    again = run_experiment(small_config(), tmp_path, agents=ScriptedBackend(demo_reply), progress=False)
    assert (again.ran, again.failed) == (13, 0)
    assert (tmp_path / "dialogues.jsonl").read_text().splitlines()[:16] == lines_before
    current = current_records(read_records(tmp_path / "dialogues.jsonl"))
    assert len(current) == 16 and not any(r["failure"] for r in current)
    assert [record_key(r) for r in current] == keys(tmp_path)[:16]
    assert "16 complete, 0 failed" in again.report.read_text()


def test_a_task_the_endpoint_always_refuses_fails_alone_and_the_command_exits_non_zero(tmp_path):
    """The real command against a fake endpoint on 127.0.0.1 that serves the demo policy but answers 400
    (content filter) to every request about one task: that task's dialogues are stored as failed, the
    others complete, the report counts the failures and the exit status is 1."""
    refused = "Plan a one-week study schedule"

    def script(body):
        request = ChatRequest(messages=messages_from_dicts(body["messages"]), max_tokens=8)
        if any(refused in m.content for m in request.messages):
            return error(400, "The prompt triggered the content filter.", "content_filter")
        return completion(demo_reply(request))

    cmd = [sys.executable, str(REPO / "tools/psysafe.py"), f"--config={REPO / 'configs/psysafe/openai_endpoint.py'}",
           f"--workdir={tmp_path}", "--config.backend.model=fake", "--config.tasks.limit_per_kind=2",
           "--config.attacks=('none','HI')", "--config.backend.max_attempts=2", "--config.backend.backoff_s=0.01"]
    with FakeEndpoint(script) as endpoint:
        env = {**os.environ, "OPENAI_BASE_URL": endpoint.base_url, "OPENAI_API_KEY": "sk-fake"}
        run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "2 of 8 dialogues failed" in run.stderr
    records = read_records(tmp_path / "dialogues.jsonl")
    failed = [r for r in records if r["failure"]]
    assert len(records) == 8 and len(failed) == 2
    assert all(r["task"]["text"].startswith(refused) for r in failed)
    assert all("HTTP 400: content_filter" in r["failure"]["error"] and "not retried" in r["failure"]["error"]
               for r in failed)
    report = (tmp_path / "report.md").read_text()
    assert "8 dialogues from `dialogues.jsonl`: 6 complete, 2 failed." in report and "## Failed dialogues" in report


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


def test_a_judge_without_valid_verdicts_gives_no_rates_and_a_warning_up_front(tmp_path):
    c = small_config()
    c.systems, c.attacks = ("autogpt",), ("HI-Traits",)
    vague = ScriptedBackend(lambda r: "Hard to say; it could go either way.")
    report = run_experiment(c, tmp_path, agents=ScriptedBackend(demo_reply), judge=vague, progress=False).report
    lines = report.read_text().splitlines()
    assert lines[4].startswith("**Warning: 100.0% of agent messages (8 of 8) have an invalid judge verdict, "
                               "above max_invalid_verdict_share = 10.0%.**")
    assert "| autogpt | HI-Traits | none | dangerous | 2 | 0 | - | - | 4 | 1.000 |" in report.read_text()
    c.max_invalid_verdict_share = 1.0
    report = run_experiment(c, tmp_path, agents=ScriptedBackend(demo_reply), judge=vague, progress=False).report
    assert "Warning" not in report.read_text()
    assert "Warning" not in write_report(tmp_path).read_text()  # the threshold comes from config.json
    assert "Warning: 100.0%" in write_report(tmp_path, max_invalid_verdict_share=0.5).read_text()


def test_store_keeps_failed_attempts_as_history_and_reruns_their_keys(tmp_path):
    key = {"task_id": "t", "system": "s", "attack": "a", "defence": "none", "seed": 0}
    other = {**key, "task_id": "u"}
    store = DialogueStore(tmp_path / "d.jsonl")
    store.append({"key": key, "failure": {"stage": "judge", "error": "timeout"}})
    store.append({"key": other, "failure": None})
    store.append({"key": key, "failure": {"stage": "agent turn", "error": "HTTP 503"}})
    assert not DialogueStore(tmp_path / "d.jsonl").is_finished(key)
    assert current_records(store.records())[0]["failure"]["error"] == "HTTP 503"  # the latest attempt
    store.append({"key": key, "failure": None, "n": 4})
    assert DialogueStore(tmp_path / "d.jsonl").is_finished(key)
    assert current_records(store.records()) == [{"key": key, "failure": None, "n": 4}, {"key": other, "failure": None}]
    with pytest.raises(ValueError, match="already stored"):
        store.append({"key": key, "failure": {"stage": "judge", "error": "late"}})


def test_api_key_is_not_written(tmp_path):
    c = small_config()
    c.backend.api_key = "sk-secret-xyz"
    c.systems = ("autogpt",)
    c.attacks = ("none",)
    run_experiment(c, tmp_path, agents=ScriptedBackend(demo_reply), progress=False)
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".md"):
            assert "sk-secret-xyz" not in f.read_text()
    assert json.loads((tmp_path / "config.json").read_text())["config"]["backend"]["api_key"] == "<hidden>"


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
