"""Run identity: a fingerprint of everything that determines a dialogue is stored with it; a rerun with
other settings in the same workdir is refused, naming what differs, or stores beside them when asked."""

import json

import pytest

from agent_safety.backends import ScriptedBackend
from agent_safety.demo_policy import demo_reply
from agent_safety.run import run_experiment
from agent_safety.run_config import default_config
from agent_safety.run_identity import (SettingsMismatch, checkpoint_digest, dialogue_settings, differing_keys,
                                       fingerprint)
from agent_safety.store import read_records


def small_config():
    c = default_config()
    c.tasks.limit_per_kind = 1
    c.systems, c.attacks = ("autogpt",), ("none", "HI")
    return c  # 2 tasks x 2 attacks = 4 dialogues


def _fp(**changes):
    c = small_config()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    return fingerprint(dialogue_settings(c))


@pytest.mark.parametrize("change", [
    {"backend__policy": "other"}, {"judge_backend__kind": "openai", "judge_backend__model": "gpt-4o"},
    {"trait_vector": (1, 0, 1, 1, 1, 1)}, {"rounds": 2}, {"agent_sampling__temperature": 0.9},
    {"judge_sampling__max_tokens": 64}, {"doctor__threshold": 30}, {"questionnaire_every_turn": False},
])
def test_every_determining_setting_changes_the_fingerprint(change):
    assert _fp(**change) != _fp()


@pytest.mark.parametrize("change", [{"batch_size": 3}, {"seeds": (0, 1)}, {"tasks__limit_per_kind": 5},
                                    {"backend__concurrency": 2}, {"backend__max_attempts": 9},
                                    {"max_invalid_verdict_share": 0.5}])
def test_settings_that_do_not_change_a_dialogue_keep_the_fingerprint(change):
    assert _fp(**change) == _fp()


def test_checkpoint_digest_follows_the_weights(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    (tmp_path / "ckpt" / "weights.bin").write_bytes(b"\0" * (3 << 20))
    before = checkpoint_digest(str(tmp_path / "ckpt"))
    with (tmp_path / "ckpt" / "weights.bin").open("r+b") as f:
        f.seek(10)
        f.write(b"\1")
    assert checkpoint_digest(str(tmp_path / "ckpt")) != before and len(before) == 12
    assert checkpoint_digest("smollm2-135m-instruct") == ""
    c = small_config()
    c.backend.kind, c.backend.model_path = "jax", str(tmp_path / "ckpt")
    assert dialogue_settings(c)["agents"]["digest"] == checkpoint_digest(str(tmp_path / "ckpt"))
    assert dialogue_settings(c)["judge"] == dialogue_settings(c)["agents"]  # judge_backend "same"
    without_template = fingerprint(dialogue_settings(c))
    c.backend.chat_template = "chatml"
    assert fingerprint(dialogue_settings(c)) != without_template


def test_no_model_path_digests_nothing_not_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "some_file").write_text("changes as a run writes")
    monkeypatch.chdir(tmp_path)
    assert checkpoint_digest("") == ""


def test_differing_keys_are_dotted():
    assert differing_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 4}) == {
        "a.c": (2, 5), "d": (3, None), "e": (None, 4)}


def _run(c, workdir):
    return run_experiment(c, workdir, agents=ScriptedBackend(demo_reply), progress=False)


def test_each_record_and_config_json_carry_the_settings(tmp_path):
    _run(small_config(), tmp_path)
    records = read_records(tmp_path / "dialogues.jsonl")
    current = fingerprint(dialogue_settings(small_config()))
    assert {r["fingerprint"] for r in records} == {current}
    assert records[0]["settings"]["trait_vector"] == [1] * 6 and len(records[0]["settings"]["prompts"]) == 12
    described = json.loads((tmp_path / "config.json").read_text())
    assert described["fingerprint"] == current and described["stored_settings"] == {current: records[0]["settings"]}


@pytest.mark.parametrize("field, value, named", [("trait_vector", (0, 1, 1, 1, 1, 1), "trait_vector: [1, 1, 1"),
                                                 ("rounds", 2, "rounds: 0 -> 2")])
def test_a_rerun_with_other_settings_is_refused_naming_what_differs(tmp_path, field, value, named):
    _run(small_config(), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    c = small_config()
    c[field] = value
    never = ScriptedBackend(lambda r: pytest.fail("no model call expected"))
    with pytest.raises(SettingsMismatch, match="other settings") as refusal:
        run_experiment(c, tmp_path, agents=never, progress=False)
    assert named in str(refusal.value) and "allow_mixed_settings" in str(refusal.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # config.json too


def test_mixed_settings_on_request_store_beside_and_report_apart(tmp_path):
    _run(small_config(), tmp_path)
    c = small_config()
    c.trait_vector, c.allow_mixed_settings = (0, 0, 0, 0, 0, 0), True
    summary = _run(c, tmp_path)
    assert summary.ran == 4
    records = read_records(tmp_path / "dialogues.jsonl")
    fps = [fingerprint(dialogue_settings(small_config())), fingerprint(dialogue_settings(c))]
    assert [r["fingerprint"] for r in records] == [fps[0]] * 4 + [fps[1]] * 4
    assert set(json.loads((tmp_path / "config.json").read_text())["stored_settings"]) == set(fps)
    table = summary.report.read_text()
    assert "| settings | system | attack |" in table
    assert all(f"| {fp} | autogpt | HI | none | dangerous | 1 |" in table for fp in fps)
    assert _run(c, tmp_path).ran == 0  # both stored, nothing left to run


def test_results_from_before_fingerprints_are_refused(tmp_path):
    _run(small_config(), tmp_path)
    path = tmp_path / "dialogues.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("fingerprint", "settings")}) + "\n"
                            for r in lines))
    with pytest.raises(SettingsMismatch, match="without recorded settings"):
        _run(small_config(), tmp_path)
