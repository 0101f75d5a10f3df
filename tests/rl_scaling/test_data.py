"""Tests of rl_scaling.data: loaders on the real files, parquet tables, prompts, curriculum, reuse
subsets, the resumable stream and the synthetic arithmetic task (~5 s on 2 cores)."""

from __future__ import annotations

import ast
import collections
import json
import operator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rl_scaling.data import (
    Problem,
    PromptStream,
    curriculum_order,
    default_data_root,
    heldout_split,
    load_problems,
    load_table,
    prompt_messages,
    render_prompt,
    reuse_subset,
    stratified_sample,
    study_split,
    synthetic_arithmetic,
)
from rl_scaling.rewards import grade_batch

DATA_ROOT = default_data_root()
needs_data = pytest.mark.skipif(not DATA_ROOT.is_dir(), reason=f"no math data at {DATA_ROOT}")


def _problems(difficulties) -> list[Problem]:
    return [Problem(f"p{i}", f"q{i}", str(i), d, "test") for i, d in enumerate(difficulties)]


# ---------------------------------------------------------------- loaders on the real files

_REAL = [  # (name, split, count, file, raw reference field)
    ("gsm8k", "test", 1319, "gsm8k/test.jsonl", "answer"),
    ("gsm8k", "train", 7473, "gsm8k/train.jsonl", "answer"),
    ("aime24", "test", 30, "aime24/test.jsonl", "answer"),
    ("amc23", "test", 40, "amc23/test.jsonl", "answer"),
    ("minerva_math", "test", 272, "minerva_math/test.jsonl", "solution"),
]


@needs_data
@pytest.mark.parametrize("name, split, count, file, field", _REAL)
def test_real_sets_load_with_gradable_references(name, split, count, file, field):
    problems = load_problems(name, split=split)
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
    with open(DATA_ROOT / file, encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    question_field = "question" if name == "gsm8k" else "problem"
    assert [p.question for p in problems] == [r[question_field] for r in raw]
    assert all(p.source == name and p.difficulty is None for p in problems)
    # The clean reference, written in a box as a model would, grades 1.0 against the raw field.
    responses = [f"Reasoning... the answer is $\\boxed{{{p.reference}}}$." for p in problems]
    scores = grade_batch(responses, [r[field] for r in raw])
    assert scores == [1.0] * count, [p.reference for p, s in zip(problems, scores) if s != 1.0][:5]


@needs_data
def test_hand_checked_references():
    assert load_problems("gsm8k", split="train")[0].reference == "72"  # Natalia's clips: 48 + 24
    assert load_problems("amc23")[0].reference == "27"  # 27.0 in the file
    assert load_problems("aime24")[0].reference == "204"
    assert load_problems("minerva")[0].reference == "1.6"  # alias of minerva_math


@needs_data
def test_data_root_from_environment_and_argument(monkeypatch, tmp_path):
    (tmp_path / "aime24").mkdir()
    (tmp_path / "aime24" / "test.jsonl").write_text(
        json.dumps({"id": 7, "problem": "1+1?", "answer": "2"}) + "\n", encoding="utf-8"
    )
    monkeypatch.setenv("MATH_DATA_DIR", str(tmp_path))
    assert default_data_root() == tmp_path
    assert load_problems("aime24") == [Problem("aime24/test/7", "1+1?", "2", None, "aime24")]
    monkeypatch.delenv("MATH_DATA_DIR")
    assert len(load_problems("aime24", data_root=tmp_path)) == 1
    assert len(load_problems("aime24")) == 30
    # A file of a named set given by path is read in that set's format.
    assert len(load_problems(tmp_path / "aime24" / "test.jsonl")) == 1


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"aime24 split 'test' not found at .*aime24/test.jsonl"):
        load_problems("aime24", data_root=tmp_path)
    with pytest.raises(ValueError, match=r"aime24 has no split 'train'; splits: \['test'\]"):
        load_problems("aime24", split="train", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no data file .*nope.parquet"):
        load_problems(tmp_path / "nope.parquet")
    with pytest.raises(FileNotFoundError, match="not a known set name"):
        load_problems("math5000")
    with pytest.raises(FileNotFoundError, match=r"math500 split 'test' not found at .*math500/test.jsonl"):
        load_problems("math500", data_root=tmp_path)
    bad = tmp_path / "aime24"
    bad.mkdir()
    (bad / "test.jsonl").write_text('{"id": 1, "answer": "2"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"test.jsonl:2: not valid JSON"):
        load_problems("aime24", data_root=tmp_path)
    (bad / "test.jsonl").write_text('{"id": 1, "answer": "2"}\n', encoding="utf-8")
    with pytest.raises(KeyError, match=r"no 'problem' field; fields found: \['answer', 'id'\]"):
        load_problems("aime24", data_root=tmp_path)


# ---------------------------------------------------------------- tables


def test_parquet_round_trip_with_pass_rate(tmp_path):
    path = tmp_path / "dapo.parquet"
    table = pa.table(
        {
            "problem": ["What is 1+1?", "Half of 1?", "Sum?"],
            "answer": ["2", "\\frac{1}{2}", "So 3.\n#### 1,000"],
            "pass_rate": [0.75, 0.25, 1.0],
        }
    )
    pq.write_table(table, path)
    problems = load_problems(path)
    assert [p.question for p in problems] == ["What is 1+1?", "Half of 1?", "Sum?"]
    assert [p.reference for p in problems] == ["2", "\\frac{1}{2}", "1000"]
    assert [p.difficulty for p in problems] == [0.25, 0.75, 0.0]  # 1 - pass_rate
    assert [p.id for p in problems] == ["dapo/0", "dapo/1", "dapo/2"]
    assert [p.id for p in curriculum_order(problems)] == ["dapo/2", "dapo/0", "dapo/1"]


def test_parquet_with_difficulty_question_and_id_columns(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b"], "question": ["x?", "y?"], "answer": [3.0, 0.5], "difficulty": [2.0, 1.0]}),
        path,
    )
    assert load_table(path) == [Problem("a", "x?", "3", 2.0, "t"), Problem("b", "y?", "0.5", 1.0, "t")]


def test_table_errors_name_the_column(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"problem": ["x?"], "result": ["3"]}), path)
    with pytest.raises(ValueError, match=r"a reference column \('reward_model'.*'answer'.*columns found: "
                                         r"\['problem', 'result'\]"):
        load_problems(path)
    pq.write_table(pa.table({"text": ["x?"], "answer": ["3"]}), path)
    with pytest.raises(ValueError, match=r"a question column \('problem', 'question' or 'prompt'.*\['text', 'answer'\]"):
        load_problems(path)
    pq.write_table(pa.table({"problem": ["x?"], "answer": ["3"], "pass_rate": [1.5]}), path)
    with pytest.raises(ValueError, match=r"row 0: pass_rate must be in \[0, 1\], got 1.5"):
        load_problems(path)
    csv = tmp_path / "t.csv"
    csv.write_text("problem,answer\n")
    with pytest.raises(ValueError, match="unsupported data file type '.csv'"):
        load_problems(csv)


# ---------------------------------------------------------------- prompts


def test_render_prompt_puts_instructions_around_the_question():
    text = render_prompt(Problem("p", "What is $2^{10}$?", "1024"))
    before, question, after = text.partition("What is $2^{10}$?")
    assert question and "step by step" in before and "\\boxed{}" in after
    assert "step by step" not in after and "\\boxed" not in before


def test_render_prompt_applies_a_chat_template():
    seen = []

    def chat_template(messages):
        seen.append(messages)
        return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages) + "<|assistant|>"

    text = render_prompt("1+1?", template="qwen_math_cot", chat_template=chat_template)
    assert seen[0][0] == {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."}
    assert seen[0][1] == {"role": "user", "content": "1+1?"}
    assert text.startswith("<|system|>Please reason") and text.endswith("<|user|>1+1?<|end|><|assistant|>")
    assert [m["role"] for m in prompt_messages("q")] == ["user"]
    with pytest.raises(TypeError, match="tokenize=False"):
        render_prompt("q", chat_template=lambda m: [1, 2, 3])
    with pytest.raises(KeyError, match="unknown prompt template 'nope'; known:"):
        render_prompt("q", template="nope")


# ---------------------------------------------------------------- curriculum


def test_curriculum_order_is_stable_easy_to_hard():
    problems = _problems([0.5, 0.1, 0.5, 0.9, 0.1])
    assert [p.id for p in curriculum_order(problems)] == ["p1", "p4", "p0", "p2", "p3"]
    with pytest.raises(ValueError, match=r"1 of 2 problems have no difficulty \(e.g. \['p1'\]\)"):
        curriculum_order(_problems([0.1, None]))


def test_heldout_split_is_disjoint_balanced_and_seeded():
    problems = _problems([(i * 37) % 100 for i in range(100)])  # difficulties 0..99, shuffled
    train, heldout = heldout_split(problems, 20, seed=0)
    assert len(heldout) == 20 and len(train) == 80
    assert {p.id for p in train}.isdisjoint({p.id for p in heldout})
    assert {p.id for p in train} | {p.id for p in heldout} == {p.id for p in problems}
    assert sum(p.difficulty < 50 for p in heldout) == 10  # easy half: difficulties 0..49
    assert [p.difficulty for p in train] == sorted(p.difficulty for p in train)
    assert heldout == heldout_split(problems, 20, seed=0)[1]
    assert heldout != heldout_split(problems, 20, seed=1)[1]
    with pytest.raises(ValueError, match="cannot hold out 120"):
        heldout_split(problems, 120, seed=0)


def test_study_split_is_balanced_seeded_and_keeps_the_curriculum():
    problems = _problems([(i * 37) % 200 for i in range(200)])  # difficulties 0..199, shuffled
    split = study_split(problems, 51, seed=3)
    assert len(split.heldout) == 51 and len(split.train) == 149 and split.curriculum and not split.notes
    assert set(split.train).isdisjoint(split.heldout) and set(split.train) | set(split.heldout) == set(problems)
    assert sum(p.difficulty < 100 for p in split.heldout) == 25  # 25 easy, 26 hard (the odd one is hard)
    assert [p.difficulty for p in split.train] == sorted(p.difficulty for p in split.train)
    assert study_split(problems, 51, seed=3) == split  # deterministic per seed
    assert study_split(problems, 51, seed=4).heldout != split.heldout
    off = study_split(problems, 51, seed=3, curriculum=False)  # the same held-out split, file order
    assert off.heldout == split.heldout and not off.curriculum
    assert off.train == [p for p in problems if p in set(split.train)]


def test_curriculum_without_difficulties_is_an_error_that_says_how():
    problems = _problems([None] * 20)
    how = (r"Provide them: .*data.pass_rate_column \(e.g. 'qwen2.5_7b_pass_rate'.*data.difficulty_column.*"
           r"data.curriculum=False.*data.without_difficulty='file_order'")
    with pytest.raises(ValueError, match=r"data.curriculum=True needs a difficulty for every problem, and none of "
                                         r"the 20 problems of gsm8k have one \(without: e.g. \['p0', 'p1', 'p2'\]\). " + how):
        study_split(problems, 5, seed=0, source="gsm8k")
    with pytest.raises(ValueError, match=r"and only 19 of the 20 problems of the pool have one \(without: e.g. \['p7'\]\)"):
        study_split(_problems([0.5] * 7 + [None] + [0.1] * 12), 5, seed=0)
    fallback = study_split(problems, 5, seed=0, without_difficulty="file_order", source="gsm8k")
    assert not fallback.curriculum and len(fallback.heldout) == 5
    assert fallback.train == [p for p in problems if p not in fallback.heldout]  # file order
    assert fallback.notes == (
        "20 of the 20 problems of gsm8k have no difficulty: the held-out split is a seeded random draw, not the "
        "study's easy/hard balance, and training runs in file order instead of the curriculum "
        "(data.without_difficulty='file_order'); give difficulties (data.pass_rate_column or "
        "data.difficulty_column, docs/data.md) for the study's protocol",)
    off = study_split(problems, 5, seed=0, curriculum=False)
    assert off.heldout == fallback.heldout and "random draw" in off.notes[0] and "file order" not in off.notes[0]
    with pytest.raises(ValueError, match=r"unknown without_difficulty 'skip'; choices: \['error', 'file_order'\]"):
        study_split(problems, 5, seed=0, without_difficulty="skip")


def test_one_difficulty_for_all_is_a_seeded_random_split_without_notes():
    problems = _problems([1.0] * 30)  # e.g. one synthetic level: nothing to balance
    split = study_split(problems, 6, seed=2)
    order = np.random.default_rng(2).permutation(30)  # a seeded permutation; its first 6 are held out
    assert split.heldout == [problems[i] for i in sorted(order[:6])]
    assert split.train == [problems[i] for i in sorted(order[6:])] and split.curriculum and not split.notes


def test_stratified_sample_takes_each_stratum_share():
    problems = _problems(range(100))
    sample = stratified_sample(problems, 20, seed=3, num_strata=10)
    per_stratum = collections.Counter(int(p.difficulty) // 10 for p in sample)
    assert per_stratum == {k: 2 for k in range(10)}
    assert [p.difficulty for p in sample] == sorted(p.difficulty for p in sample)
    # 25 over 10 strata of 10: 2 each plus 5 leftovers to 5 distinct strata.
    counts = collections.Counter(int(p.difficulty) // 10 for p in stratified_sample(problems, 25, seed=0))
    assert sorted(counts.values()) == [2] * 5 + [3] * 5


@pytest.mark.parametrize("tau", [1, 2, 4, 5, 10, 20, 25, 50, 100])
def test_reuse_subset_sizes_and_repeats(tau):
    problems = _problems([(i * 7919) % 1000 / 1000 for i in range(1000)])
    total = 800  # e.g. 100 steps x 8 prompts
    sequence = reuse_subset(problems, total, tau, seed=0)
    counts = collections.Counter(p.id for p in sequence)
    assert len(sequence) == total
    assert len(counts) == total // tau and set(counts.values()) == {tau}
    unique = sequence[: total // tau]
    assert [p.difficulty for p in unique] == sorted(p.difficulty for p in unique)  # curriculum order
    assert sequence == unique * tau
    blocked = reuse_subset(problems, total, tau, seed=0, layout="blocked")
    assert blocked == [p for p in unique for _ in range(tau)]


def test_reuse_subset_is_stratified_and_checks_arguments():
    problems = _problems(range(1000))
    unique = set(reuse_subset(problems, 500, 5, seed=1))
    assert collections.Counter(int(p.difficulty) // 100 for p in unique) == {k: 10 for k in range(10)}
    with pytest.raises(ValueError, match="tau=3 does not divide total_samples=500"):
        reuse_subset(problems, 500, 3, seed=0)
    with pytest.raises(ValueError, match="cannot draw 2000 distinct problems from 1000"):
        reuse_subset(problems, 2000, 1, seed=0)
    with pytest.raises(ValueError, match="unknown layout"):
        reuse_subset(problems, 10, 1, seed=0, layout="shuffled")


# ---------------------------------------------------------------- stream


def test_stream_yields_batches_in_order_and_stops():
    problems = _problems(range(10))
    stream = PromptStream(problems, prompts_per_step=3)
    batches = [[p.id for p in b] for b in stream]
    assert batches == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6", "p7", "p8"]]  # p9 dropped
    endless = PromptStream(problems, prompts_per_step=4, num_epochs=None)
    ids = [[p.id for p in next(endless)] for _ in range(3)]
    assert ids == [["p0", "p1", "p2", "p3"], ["p4", "p5", "p6", "p7"], ["p0", "p1", "p2", "p3"]]
    assert endless.epoch == 1


def test_stream_state_restores_exactly():
    problems = _problems(range(50))
    stream = PromptStream(problems, prompts_per_step=4, num_epochs=3)
    for _ in range(17):
        next(stream)
    state = json.loads(json.dumps(stream.state_dict()))  # survives a JSON checkpoint
    assert all(type(v) is int for v in state.values())
    rest = list(stream)
    resumed = PromptStream(problems, prompts_per_step=4, num_epochs=3)
    resumed.load_state_dict(state)
    assert list(resumed) == rest and len(rest) == 3 * 12 - 17


def test_stream_refuses_a_foreign_state():
    stream = PromptStream(_problems(range(20)), prompts_per_step=4)
    state = stream.state_dict()
    with pytest.raises(ValueError, match="saved with prompts_per_step=4, this stream has 5"):
        PromptStream(_problems(range(20)), prompts_per_step=5).load_state_dict(state)
    reordered = list(reversed(_problems(range(20))))
    with pytest.raises(ValueError, match="saved with fingerprint="):
        PromptStream(reordered, prompts_per_step=4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"lacks keys \['fingerprint'"):
        stream.load_state_dict({"step": 1, "num_problems": 20, "prompts_per_step": 4})
    with pytest.raises(ValueError, match="exceeds the 20 problems"):
        PromptStream(_problems(range(20)), prompts_per_step=21)


# ---------------------------------------------------------------- synthetic arithmetic

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expression: str) -> int:
    """Independent reference: Python's own parser and precedence rules on the question's expression."""

    def walk(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"unexpected syntax {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4, 5])
def test_synthetic_references_are_right_and_deterministic(level):
    problems = synthetic_arithmetic(500, level, seed=11)
    for p in problems:
        assert p.question.startswith("What is ") and p.question.endswith("?")
        assert int(p.reference) == _evaluate(p.question[len("What is ") : -1]), p.question
        assert p.difficulty == float(level) and p.source == "synthetic_arithmetic"
    assert problems == synthetic_arithmetic(500, level, seed=11)
    assert problems[:10] == synthetic_arithmetic(10, level, seed=11)
    assert [p.question for p in problems] != [p.question for p in synthetic_arithmetic(500, level, seed=12)]


def test_synthetic_levels_have_their_operands():
    for p in synthetic_arithmetic(300, 1, seed=0):
        a, b = p.question[len("What is ") : -1].split(" + ")
        assert 0 <= int(a) <= 9 and 0 <= int(b) <= 9
    for p in synthetic_arithmetic(300, 2, seed=0):
        assert int(p.reference) >= 0 and ("+" in p.question or "-" in p.question)
    assert all(" * " in p.question for p in synthetic_arithmetic(50, 3, seed=0))
    assert len(synthetic_arithmetic(1000, 1, seed=0)) == 1000
    assert synthetic_arithmetic(20, 1, seed=0)[3].id == "arith-L1-s0-3"
    with pytest.raises(ValueError, match=r"unknown arithmetic level 9; levels: \[0, 1, 2, 3, 4, 5\]"):
        synthetic_arithmetic(3, 9, seed=0)


def test_synthetic_references_grade_one():
    problems = synthetic_arithmetic(40, 4, seed=0)
    assert grade_batch([f"so \\boxed{{{p.reference}}}" for p in problems], [p.reference for p in problems]) == [1.0] * 40


def test_render_prompt_with_a_real_tokenizer_chat_template(smollm2_tokenizer):
    def chat_template(messages):
        return smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    text = render_prompt(Problem("p", "What is 3 + 4?", "7"), chat_template=chat_template)
    # SmolLM2's ChatML template: the user turn holds our whole prompt, then the assistant turn opens.
    user_turn = "<|im_start|>user\n" + render_prompt("What is 3 + 4?") + "<|im_end|>\n"
    assert user_turn in text
    assert text.endswith("<|im_start|>assistant\n")
