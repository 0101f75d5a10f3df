"""Task loaders: the PsySafe file (label decides the kind), AdvBench's, our own set; CSV with or without a
BOM and .xlsx; duplicates dropped with a warning; clear errors, raised before any dialogue."""

import logging

import openpyxl
import pytest

from agent_safety.run import run_experiment
from agent_safety.run_config import default_config
from agent_safety.tasks import (builtin_tasks, label_is_dangerous, load_advbench_file, load_psysafe_file,
                                load_tasks)

DIMENSIONS = ["malware", "illegal activity", "physical harm", "fraud", "privacy violation", "economic harm",
              "hate speech", "pornography", "government decision-making", "financial advice",
              "health consultation", "political lobbying", "legal opinion"]
ORIGINAL_ROWS = [  # the original study's labels
    ("task", "label", "dimension"),
    ("Write a poem, please.", "ai_society_instruction", "no"),
    ("Build a tool for tracking set construction.", "ai_society_code", "no"),
    ("Do a bad thing.", "advbench_red", "Fraud"),
    ("Do another bad thing.", "DAN_red", ""),     # a dangerous label with an empty dimension
    ("Do a third bad thing.", "advbench_red", "No"),  # ... or a "No" dimension: still dangerous
]


def _csv(rows):
    return "\n".join(",".join(f'"{c}"' if "," in c else c for c in row) for row in rows) + "\n"


def _xlsx(path, rows):
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(list(row))
    workbook.save(path)
    return path


def _kinds(tasks):
    return [(t.text, t.kind, t.dimension) for t in tasks]


EXPECTED = [("Write a poem, please.", "safe", "no"), ("Build a tool for tracking set construction.", "safe", "no"),
            ("Do a bad thing.", "dangerous", "Fraud"), ("Do another bad thing.", "dangerous", "unspecified"),
            ("Do a third bad thing.", "dangerous", "unspecified")]


def test_builtin_set():
    tasks = builtin_tasks()
    safe = [t for t in tasks if not t.dangerous]
    dangerous = [t for t in tasks if t.dangerous]
    assert len(safe) == 10 and all(t.dimension == "no" for t in safe)
    assert [t.dimension for t in dangerous] == DIMENSIONS
    assert len({t.id for t in tasks}) == len(tasks)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"], ids=["plain", "with BOM"])
def test_psysafe_csv_label_decides_the_kind(tmp_path, encoding):
    path = tmp_path / "psysafe.csv"
    path.write_text(_csv(ORIGINAL_ROWS), encoding=encoding)
    tasks = load_psysafe_file(path)
    assert _kinds(tasks) == EXPECTED
    assert tasks[0].id.startswith("psysafe:")


def test_psysafe_xlsx(tmp_path):
    tasks = load_tasks("psysafe", str(_xlsx(tmp_path / "data_tiny.xlsx", ORIGINAL_ROWS)))
    assert _kinds(tasks) == EXPECTED and tasks[0].id.startswith("data_tiny:")


def test_xlsx_with_blank_rows_numbers_and_capitalised_headers(tmp_path):
    rows = [(None, None), ("Goal", "Target"), ("Do a bad thing", "Sure"), (None, None), (42, 7.0)]
    tasks = load_advbench_file(_xlsx(tmp_path / "advbench.xlsx", rows))
    assert [t.text for t in tasks] == ["Do a bad thing", "42"] and all(t.dangerous for t in tasks)


@pytest.mark.parametrize("label, dangerous", [
    ("advbench_red", True), ("DAN_red", True), ("dangerous", True), ("Unsafe", True), ("1", True), ("yes", True),
    ("ai_society_instruction", False), ("ai_society_code", False), ("camel_safe", False), ("SAFE", False),
    ("benign", False), ("0", False), ("no", False),
])
def test_label_mapping(label, dangerous):
    assert label_is_dangerous(label) is dangerous


@pytest.mark.parametrize("label", ["", "maybe", "not_safe", "safe_red", "camel"])
def test_unclear_labels_are_errors_naming_the_row(tmp_path, label):
    path = tmp_path / "t.csv"
    path.write_text(_csv(ORIGINAL_ROWS[:2] + [("A task.", label, "fraud")]))
    with pytest.raises(ValueError, match=f"t.csv: row 3: label {label!r}"):
        load_psysafe_file(path)


def test_advbench_csv(tmp_path):
    path = tmp_path / "harmful_behaviors.csv"
    path.write_text("goal,target\nDo a bad thing,Sure here is\n")
    (task,) = load_advbench_file(path)
    assert task.dangerous and task.dimension == "advbench" and task.text == "Do a bad thing"


def test_duplicates_are_dropped_with_a_warning_naming_them(tmp_path, caplog):
    path = tmp_path / "t.csv"
    path.write_text(_csv(ORIGINAL_ROWS + [ORIGINAL_ROWS[3], ORIGINAL_ROWS[3], (" Write a poem, please. ", "safe", "no")]))
    with caplog.at_level(logging.WARNING):
        tasks = load_tasks("psysafe", str(path))
    assert _kinds(tasks) == EXPECTED
    assert "dropped 3 duplicate task row(s)" in caplog.text
    assert "'Do a bad thing.' x3" in caplog.text and "'Write a poem, please.' x2" in caplog.text


def test_unreadable_files_name_the_problem(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("goal,target\na,b\n")
    with pytest.raises(ValueError, match=r"x.csv: missing column\(s\) \['task', 'label', 'dimension'\]"):
        load_psysafe_file(path)
    path.write_text("task,label,dimension\n")
    with pytest.raises(ValueError, match="no task rows"):
        load_psysafe_file(path)
    path.write_bytes("task,label,dimension\ncaf\xe9,safe,no\n".encode("latin-1"))
    with pytest.raises(ValueError, match="x.csv: not UTF-8 text"):
        load_psysafe_file(path)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_advbench_file(tmp_path / "nope.csv")
    (tmp_path / "fake.xlsx").write_text("task,label,dimension\n")
    with pytest.raises(ValueError, match="fake.xlsx: not a readable .xlsx workbook"):
        load_psysafe_file(tmp_path / "fake.xlsx")
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(ValueError, match="unsupported task file type '.xls'"):
        load_psysafe_file(tmp_path / "old.xls")


def test_a_bad_task_file_fails_before_any_dialogue(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(_csv(ORIGINAL_ROWS + [("A task.", "maybe", "fraud")]))
    c = default_config()
    c.tasks.source, c.tasks.path = "psysafe", str(path)
    with pytest.raises(ValueError, match="row 7"):
        run_experiment(c, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


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
