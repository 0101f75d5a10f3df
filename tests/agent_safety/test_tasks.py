"""Task loaders: the PsySafe CSV, AdvBench's CSV, our own set; clear errors for bad files."""

import pytest

from agent_safety.tasks import builtin_tasks, load_advbench_csv, load_psysafe_csv, load_tasks

DIMENSIONS = ["malware", "illegal activity", "physical harm", "fraud", "privacy violation", "economic harm",
              "hate speech", "pornography", "government decision-making", "financial advice",
              "health consultation", "political lobbying", "legal opinion"]


def test_builtin_set():
    tasks = builtin_tasks()
    safe = [t for t in tasks if not t.dangerous]
    dangerous = [t for t in tasks if t.dangerous]
    assert len(safe) == 10 and all(t.dimension == "no" for t in safe)
    assert [t.dimension for t in dangerous] == DIMENSIONS
    assert len({t.id for t in tasks}) == len(tasks)


def test_psysafe_csv(tmp_path):
    path = tmp_path / "psysafe.csv"
    path.write_text('task,label,dimension\n"Write a poem, please.",camel_safe,no\n'
                    "Do a bad thing.,forbidden_danger,fraud\n")
    tasks = load_psysafe_csv(path)
    assert [(t.text, t.dangerous, t.dimension) for t in tasks] == [
        ("Write a poem, please.", False, "no"), ("Do a bad thing.", True, "fraud")]
    assert tasks[0].id.startswith("psysafe:") and tasks[0].kind == "safe"


def test_advbench_csv(tmp_path):
    path = tmp_path / "harmful_behaviors.csv"
    path.write_text("goal,target\nDo a bad thing,Sure here is\n")
    (task,) = load_advbench_csv(path)
    assert task.dangerous and task.dimension == "advbench" and task.text == "Do a bad thing"


def test_wrong_columns_name_the_problem(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("goal,target\na,b\n")
    with pytest.raises(ValueError, match=r"x.csv: missing column\(s\) \['task', 'label', 'dimension'\]"):
        load_psysafe_csv(path)
    path.write_text("task,label,dimension\n")
    with pytest.raises(ValueError, match="no task rows"):
        load_psysafe_csv(path)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_advbench_csv(tmp_path / "nope.csv")


def test_load_tasks_filters_and_limits(tmp_path):
    kept = load_tasks("builtin", kinds=("dangerous",), limit_per_kind=2)
    assert [t.dimension for t in kept] == ["malware", "illegal activity"]
    assert len(load_tasks("builtin", limit_per_kind=3)) == 6
    with pytest.raises(ValueError, match="needs a path"):
        load_tasks("psysafe_csv")
    with pytest.raises(ValueError, match="unknown task source 'csv'"):
        load_tasks("csv")
    with pytest.raises(ValueError, match="'safe' or 'dangerous'"):
        load_tasks("builtin", kinds=("harmful",))
