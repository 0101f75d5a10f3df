"""Tables in the layouts math RL data comes in (rl_scaling.data.tables, .fields, .prompt_wrapper) and the
named downstream sets beside the shared ones (MATH-500, AIME25, OlympiadBench), on small tables written here
and on the real files of ../shared/data/math."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.jsonl import read_jsonl, write_jsonl
from rl_scaling.data import (Problem, TableOptions, default_data_root, load_problems, load_table, render_prompt,
                             strip_wrapper)
from rl_scaling.data.fields import nested

DATA_ROOT = default_data_root()
needs_data = pytest.mark.skipif(not DATA_ROOT.is_dir(), reason=f"no math data at {DATA_ROOT}")

BOX_REQUEST = "Let's think step by step and output the final answer within \\boxed{}."
RATES = "qwen2.5_7b_pass_rate"


def _verl_rows() -> list[dict]:
    """Three verl rows as their preprocessing scripts write them: nested Python values."""
    problems = [("What is 1+1?", "2", 0.75), ("Half of 1?", "\\frac{1}{2}", 0.25), ("Find $x$: $x^2=4$, $x>0$.", "2", 1.0)]
    return [{
        "data_source": "DigitalLearningGmbH/MATH-lighteval" if i else "openai/gsm8k",
        "prompt": [{"role": "user", "content": f"{q} {BOX_REQUEST}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"index": i, "split": "train", RATES: rate, "qwen3_30b_pass_rate": rate / 2},
    } for i, (q, answer, rate) in enumerate(problems)]


EXPECTED = [  # (question, reference, difficulty with the 7B pass rate, source)
    ("What is 1+1?", "2", 0.25, "openai/gsm8k"),
    ("Half of 1?", "\\frac{1}{2}", 0.75, "DigitalLearningGmbH/MATH-lighteval"),
    ("Find $x$: $x^2=4$, $x>0$.", "2", 0.0, "DigitalLearningGmbH/MATH-lighteval"),
]


def _summary(problems: list[Problem]):
    return [(p.question, p.reference, p.difficulty, p.source) for p in problems]


def _python_strings(row: dict) -> dict:
    return {k: str(v) if k in ("prompt", "reward_model", "extra_info") else v for k, v in row.items()}


def _json_strings(row: dict) -> dict:
    return {k: json.dumps(v) if k in ("prompt", "reward_model", "extra_info") else v for k, v in row.items()}


# ---------------------------------------------------------------- verl layout


@pytest.mark.parametrize("form", ["structs", "python strings", "json strings", "mixed"])
@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_verl_table_loads_in_every_form(tmp_path, form, suffix):
    rows = _verl_rows()
    if form == "python strings":
        rows = [_python_strings(r) for r in rows]
    elif form == "json strings":
        rows = [_json_strings(r) for r in rows]
    elif form == "mixed":
        rows = [_python_strings(rows[0]), _json_strings(rows[1]), rows[2]]
        if suffix == ".parquet":  # a parquet column has one type: all strings, two forms
            rows[2] = _python_strings(rows[2])
    path = tmp_path / f"dapo{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        write_jsonl(path, rows)
    problems = load_table(path, TableOptions(pass_rate_column=RATES))
    assert _summary(problems) == EXPECTED
    assert [p.id for p in problems] == ["dapo/0", "dapo/1", "dapo/2"]


def test_verl_difficulty_source_is_a_choice(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(_verl_rows()), path)
    other = load_table(path, TableOptions(pass_rate_column="qwen3_30b_pass_rate"))
    assert [p.difficulty for p in other] == [1 - 0.375, 1 - 0.125, 1 - 0.5]
    by_index = load_table(path, TableOptions(difficulty_column="index"))  # any extra_info key or column
    assert [p.difficulty for p in by_index] == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"holds 2 pass rates \['qwen2.5_7b_pass_rate', 'qwen3_30b_pass_rate'\]: "
                                         r"choose the difficulty source with data.pass_rate_column"):
        load_table(path)
    with pytest.raises(ValueError, match=r"no field 'llama_pass_rate' \(data.pass_rate_column\); columns found: "
                                         r"\['data_source', 'prompt'.*extra_info keys found: \['index', 'split'"):
        load_table(path, TableOptions(pass_rate_column="llama_pass_rate"))
    with pytest.raises(ValueError, match="not both"):
        load_table(path, TableOptions(pass_rate_column=RATES, difficulty_column="index"))


def test_one_model_pass_rate_is_found_without_a_choice(tmp_path):
    rows = _verl_rows()
    for row in rows:
        del row["extra_info"]["qwen3_30b_pass_rate"]
    path = tmp_path / "t.jsonl"
    write_jsonl(path, rows)
    assert [p.difficulty for p in load_table(path)] == [0.25, 0.75, 0.0]
    rows[1]["extra_info"][RATES] = 1.5
    write_jsonl(path, rows)
    with pytest.raises(ValueError, match=r"t.jsonl row 1: qwen2.5_7b_pass_rate must be in \[0, 1\], got 1.5"):
        load_table(path)
    for row in rows:
        del row["extra_info"][RATES]
    write_jsonl(path, rows)
    assert [p.difficulty for p in load_table(path)] == [None] * 3


def test_prompt_wrapper_keep_or_strip(tmp_path):
    rows = _verl_rows()
    rows[0]["prompt"] = [{"role": "system", "content": "You are a helpful assistant."}] + rows[0]["prompt"]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.warns(UserWarning, match=r"1 prompt message\(s\) other than the user's .* are left out"):
        kept = load_table(path, TableOptions(prompt_wrapper="keep", pass_rate_column=RATES))
    assert [p.question for p in kept] == [f"{q} {BOX_REQUEST}" for q, *_ in EXPECTED]
    with pytest.warns(UserWarning, match="left out"):
        stripped = load_table(path, TableOptions(pass_rate_column=RATES))
    assert [p.question for p in stripped] == [q for q, *_ in EXPECTED]
    # Stripped, the study's template puts its own instruction and request around the bare problem once.
    prompt = render_prompt(stripped[0])
    assert prompt.count("\\boxed{}") == 1 and prompt.count("step by step") == 1
    with pytest.raises(ValueError, match=r"unknown prompt_wrapper 'drop'; choices: \['strip', 'keep'\]"):
        load_table(path, TableOptions(prompt_wrapper="drop", pass_rate_column=RATES))


def test_a_request_that_survives_stripping_is_reported(tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [{"prompt": [{"role": "user", "content": "What is 2+2 (answer in \\boxed{}) and why"}],
                        "reward_model": {"ground_truth": 4}}])
    with pytest.warns(UserWarning, match=r"1 of 1 prompts still ask for \\boxed\{\} .*row 0.*prompt_wrapper='keep'"):
        problems = load_table(path)
    assert problems[0].reference == "4" and problems[0].source == "t"


@pytest.mark.parametrize("wrapped, problem", [
    (f"What is 1+1? {BOX_REQUEST}", "What is 1+1?"),
    (render_prompt("What is $2^{10}$?"), "What is $2^{10}$?"),  # our own template, exactly
    (render_prompt("q?", template="boxed_answer"), "q?"),
    ("Let's think step by step.\nFind $x$ if $x+1=2$.\nPlease put your final answer within \\boxed{}.",
     "Find $x$ if $x+1=2$."),
    ("A shop sells 3 pens.\n\nHow many pens? " + BOX_REQUEST, "A shop sells 3 pens.\n\nHow many pens?"),
    ("Solve the following math problem step by step. The last line of your response should be of the form "
     "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\nWhat is 2+2?\n\n"
     "Remember to put your answer on its own line after \"Answer:\".", "What is 2+2?"),  # DAPO
    ("Compute $3.5 + 1$. Express your answer as a decimal.", "Compute $3.5 + 1$. Express your answer as a decimal."),
    ("Please reason step by step, and put your final answer within \\boxed{}.",  # never stripped to nothing
     "Please reason step by step, and put your final answer within \\boxed{}."),
])
def test_strip_wrapper(wrapped, problem):
    assert strip_wrapper(wrapped) == problem


@needs_data
def test_strip_wrapper_leaves_every_real_problem_alone():
    for name, split in [("gsm8k", "train"), ("gsm8k", "test"), ("aime24", "test"), ("amc23", "test"),
                        ("minerva_math", "test")]:
        changed = [p.id for p in load_problems(name, split=split) if strip_wrapper(p.question) != p.question.strip()]
        assert not changed, changed[:3]


@needs_data
def test_real_gsm8k_in_the_verl_layout_loads_back(tmp_path):
    # GSM8K's train split as verl's gsm8k preprocessing writes it: instruction appended, the number as ground truth.
    records = read_jsonl(DATA_ROOT / "gsm8k" / "train.jsonl")[:300]
    named = load_problems("gsm8k", split="train")[:300]
    rows = [{"data_source": "openai/gsm8k", "ability": "math",
             "prompt": [{"role": "user", "content": f"{r['question']} {BOX_REQUEST}"}],
             "reward_model": str({"style": "rule", "ground_truth": r["answer"].split("####")[-1].strip()}),
             "extra_info": str({"split": "train", "index": i})} for i, r in enumerate(records)]
    path = tmp_path / "gsm8k_verl.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    problems = load_table(path)
    assert [p.question for p in problems] == [p.question for p in named]
    assert [p.reference.replace(",", "") for p in problems] == [p.reference for p in named]
    assert {p.source for p in problems} == {"openai/gsm8k"} and {p.difficulty for p in problems} == {None}


# ---------------------------------------------------------------- Hugging Face problem / solution layout


def test_problem_solution_jsonl_takes_the_last_balanced_box(tmp_path):
    path = tmp_path / "math.jsonl"
    write_jsonl(path, [
        {"problem": "Half of 1?", "solution": "First \\boxed{0}, no: it is $\\boxed{\\frac{1}{2}}$.", "level": "Level 3"},
        {"problem": "Pair?", "solution": "So $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "level": "Level 5"},
    ])
    problems = load_table(path, TableOptions(difficulty_column="level"))
    assert [(p.reference, p.difficulty) for p in problems] == [("\\frac{1}{2}", 3.0), ("\\left( 3, \\frac{\\pi}{2} \\right)", 5.0)]
    write_jsonl(path, [{"problem": "x?", "solution": "It is 3."}])
    with pytest.raises(ValueError, match=r"math.jsonl row 0: solution has no \\boxed\{\} answer"):
        load_table(path)


@needs_data
def test_real_minerva_as_a_problem_solution_table(tmp_path):
    records = read_jsonl(DATA_ROOT / "minerva_math" / "test.jsonl")
    path = tmp_path / "minerva_copy.jsonl"  # not in a folder named like a set: read as a table
    write_jsonl(path, [{"problem": r["problem"], "solution": r["solution"]} for r in records])
    assert [p.reference for p in load_table(path)] == [p.reference for p in load_problems("minerva_math")]


# ---------------------------------------------------------------- errors and fields


def test_unreadable_tables_name_what_they_found_and_need(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["x?"], "label": ["3"]}), path)
    with pytest.raises(ValueError, match=r"not a problem table: it needs a question column \('problem', 'question' "
                                         r"or 'prompt'.*and a reference column \('reward_model' with a 'ground_truth', "
                                         r"'answer', or 'solution'.*columns found: \['text', 'label'\]"):
        load_table(path)
    write_jsonl(tmp_path / "t.jsonl", [{"prompt": "q?", "reward_model": "{'style': 'rule'}"}])
    with pytest.raises(ValueError, match=r"t.jsonl row 0: reward_model has no ground_truth"):
        load_table(tmp_path / "t.jsonl")
    write_jsonl(tmp_path / "t.jsonl", [{"prompt": "[{'role': 'system', 'content': 'hi'}]", "answer": "1"}])
    with pytest.raises(ValueError, match=r"row 0: prompt has no user message; roles found: \['system'\]"):
        load_table(tmp_path / "t.jsonl")
    write_jsonl(tmp_path / "t.jsonl", [{"prompt": "q?", "reward_model": "ground truth 4"}])
    with pytest.raises(ValueError, match=r"row 0 column 'reward_model': expected a struct or a list"):
        load_table(tmp_path / "t.jsonl")
    write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "problem": "1?", "answer": "1"}, {"id": "a", "problem": "2?", "answer": "2"}])
    with pytest.raises(ValueError, match=r"ids must be unique .* 1 repeat, e.g. \['a'\]"):
        load_table(tmp_path / "t.jsonl")


def test_nested_reads_structs_and_both_string_forms():
    value = {"ground_truth": "42", "style": "rule"}
    assert nested(value, "x") == nested(str(value), "x") == nested(json.dumps(value), "x") == value
    assert nested("[{'role': 'user', 'content': 'q'}]", "x") == [{"role": "user", "content": "q"}]
    with pytest.raises(ValueError, match="here: expected a struct or a list"):
        nested("{not python", "here")


def test_references_as_numbers_and_one_element_lists(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"prompt": "a?", "reward_model": {"ground_truth": ["$\\frac{1}{2}$"]}},
        {"prompt": "b?", "reward_model": {"ground_truth": ["27.0"]}},
    ]), path)
    assert [p.reference for p in load_table(path)] == ["\\frac{1}{2}", "27.0"]
    write_jsonl(tmp_path / "t.jsonl", [{"problem": "c?", "answer": 27.0}, {"problem": "d?", "answer": ["1", "2"]}])
    with pytest.raises(ValueError, match="a reference list must hold one answer, got 2"):
        load_table(tmp_path / "t.jsonl")


# ---------------------------------------------------------------- named downstream sets

_NAMED_ROWS = {  # the files as their sources publish them (docs/data.md)
    "math500": {"problem": "Convert $(0,3)$ to polar coordinates.", "solution": "So $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.",
                "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
                "unique_id": "test/precalculus/807.json"},
    "aime25": {"id": "I-1", "problem": "Find the sum.", "answer": "70"},
    "olympiadbench": {"id": 1606, "question": "Find the height.", "final_answer": ["$\\frac{v_0^2}{2g}$"],
                      "is_multiple_answer": False},
}


def test_named_downstream_sets_load_from_the_data_root(tmp_path):
    for name, row in _NAMED_ROWS.items():
        (tmp_path / name).mkdir()
        write_jsonl(tmp_path / name / "test.jsonl", [row])
    assert load_problems("math500", data_root=tmp_path) == [Problem(
        "math500/test/test/precalculus/807.json", "Convert $(0,3)$ to polar coordinates.",
        "\\left( 3, \\frac{\\pi}{2} \\right)", None, "math500")]
    assert load_problems("math-500", data_root=tmp_path)[0].source == "math500"
    assert load_problems("aime25", data_root=tmp_path)[0].reference == "70"
    olympiad = load_problems("olympiadbench", data_root=tmp_path)[0]
    assert (olympiad.id, olympiad.question, olympiad.reference) == ("olympiadbench/test/1606", "Find the height.",
                                                                    "\\frac{v_0^2}{2g}")
    empty = tmp_path / "empty"
    with pytest.raises(FileNotFoundError, match=r"math500 split 'test' not found at .*empty/math500/test.jsonl; "
                                                r"put the file there.*docs/data.md"):
        load_problems("math500", data_root=empty)
