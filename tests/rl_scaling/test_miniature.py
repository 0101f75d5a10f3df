"""The CPU miniature: corpus, sentencepiece tokenizer, family, pretraining, study wiring, and the reduced
study end to end (configs/miniature/reduced.py)."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest

from common.config_file import load_config
from rl_scaling.grid.expand import expand_grid
from rl_scaling.grid.run import build_command
from rl_scaling.miniature import corpus, family, pretrain, report, study
from rl_scaling.miniature import tokenizer as tok_lib
from rl_scaling.scaling import table as table_lib

REPO = study.REPO_ROOT
STUDY_CONFIG, REDUCED_CONFIG = REPO / "configs/miniature/study.py", REPO / "configs/miniature/reduced.py"

QUESTION = re.compile(r"^What is (.+)\?$")


def true_value(question: str) -> int:
    """The value of a synthetic question's expression, by Python's own arithmetic (the reference)."""
    return int(eval(QUESTION.match(question).group(1), {"__builtins__": {}}))  # digits and + - * ( ) only


# ---- corpus -----------------------------------------------------------------------------------------
def test_worked_answer_is_the_documented_format():
    assert corpus.worked_answer("68") == "The answer is \\boxed{68}."
    doc = corpus.document_of(corpus.mixed_problems((1,), 1, 0)[0])
    assert QUESTION.match(doc.prompt)
    assert doc.text == f"{doc.prompt} The answer is \\boxed{{{true_value(doc.prompt)}}}."


def test_corrupt_answer_changes_exactly_one_digit():
    rng = np.random.default_rng(0)
    for reference in ["7", "0", "18", "-47", "100", "905"]:
        for _ in range(50):
            wrong = corpus.corrupt_answer(reference, rng)
            assert wrong != reference and len(wrong) == len(reference)
            assert wrong.startswith("-") == reference.startswith("-")
            assert sum(a != b for a, b in zip(wrong, reference)) == 1
            assert not (len(wrong.lstrip("-")) > 1 and wrong.lstrip("-")[0] == "0")
    with pytest.raises(ValueError, match="integer"):
        corpus.corrupt_answer("1/2", rng)


def test_pretraining_documents_mix_levels_and_carry_the_asked_share_of_wrong_answers():
    docs = corpus.pretraining_documents((0, 1), 4000, seed=3, wrong_answer_rate=0.3)
    assert len(docs) == 4000
    single = sum("+" not in d.prompt for d in docs)  # level 0: 'What is 7?'
    assert 1900 <= single <= 2100
    wrong = np.mean([d.answer != corpus.worked_answer(str(true_value(d.prompt))) for d in docs])
    assert abs(wrong - 0.3) < 0.03  # binomial sd 0.007
    clean = corpus.pretraining_documents((0, 1), 500, seed=3)
    assert all(d.answer == corpus.worked_answer(str(true_value(d.prompt))) for d in clean)


def test_pretraining_documents_leave_out_excluded_questions():
    excluded = {f"What is {a} + {b}?" for a in range(5) for b in range(10)}
    docs = corpus.pretraining_documents((1,), 600, seed=0, exclude_questions=excluded)
    assert not {d.prompt for d in docs} & excluded
    with pytest.raises(ValueError, match="level 0"):
        corpus.pretraining_documents((0,), 10, 0, exclude_questions={f"What is {a}?" for a in range(10)})
    with pytest.raises(ValueError, match="wrong_answer_rate"):
        corpus.pretraining_documents((0,), 10, 0, wrong_answer_rate=1.0)


def test_problem_table_round_trips_through_the_trainers_loader(tmp_path):
    from rl_scaling.data import load_table

    pool = corpus.mixed_problems((0, 1, 2), 20, seed=5)
    loaded = load_table(corpus.write_problem_table(pool, tmp_path / "pool.jsonl"))
    assert [(p.question, p.reference) for p in loaded] == [(p.question, p.reference) for p in pool]
    assert all(p.difficulty is None for p in loaded)  # no curriculum sort: the shuffled order is kept
    assert all(int(p.reference) == true_value(p.question) for p in loaded)
    weighted = corpus.mixed_problems((0, 1), (10, 90), seed=5)
    assert sum("+" in p.question for p in weighted) == 90
    with pytest.raises(ValueError, match="2 levels"):
        corpus.mixed_problems((0, 1), (10, 20, 30), seed=5)


# ---- tokenizer --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    docs = corpus.pretraining_documents((0, 1, 2), 1500, seed=1, wrong_answer_rate=0.2)
    out = tmp_path_factory.mktemp("tok")
    tok_lib.build_tokenizer([d.text for d in docs], 64, out)
    return out, docs


def test_hf_tokenizer_encodes_exactly_like_sentencepiece(spm_dir):
    out, docs = spm_dir
    sp, hf = tok_lib.sentencepiece_processor(out), tok_lib.load_tokenizer_dir(out)
    assert len(hf) == sp.get_piece_size() <= 64
    for d in docs:
        for text in (d.text, d.prompt, d.answer):
            ids = hf(text, add_special_tokens=False)["input_ids"]
            assert ids == sp.encode(text), text
            assert hf.decode(ids, skip_special_tokens=True) == sp.decode(ids) == text


def test_tokenizer_specials_digits_and_end_ids(spm_dir):
    from common.tokenizer import end_token_ids

    out, _ = spm_dir
    hf = tok_lib.load_tokenizer_dir(out)
    assert (hf.pad_token_id, hf.unk_token_id, hf.eos_token_id) == (0, 1, 2)
    assert end_token_ids(hf) == [2]
    assert hf("7 + 5", add_special_tokens=True)["input_ids"] == hf("7 + 5", add_special_tokens=False)["input_ids"]
    assert not [p for p in hf.get_vocab() if sum(ch.isdigit() for ch in p) > 1]  # digits one per piece
    ids = hf("The answer is \\boxed{905}.", add_special_tokens=False)["input_ids"]
    assert hf.decode(ids + [2], skip_special_tokens=True) == "The answer is \\boxed{905}."
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        tok_lib.load_tokenizer_dir(out / "nowhere")


# ---- family -----------------------------------------------------------------------------------------
def test_family_counts_match_hand_arithmetic_and_the_real_decoder():
    import jax
    from flax import nnx

    from common.model import abstract_decoder

    shapes = load_config(STUDY_CONFIG).family
    configs = family.family_configs(shapes, vocab_size=64, eos_token_id=2)
    counts = family.param_counts(configs)
    # s1: q 32*32, k+v 2*32*16, o 32*32, biases 32+16+16, MLP 3*32*96, 2 norms 2*32; 2 layers + final norm.
    assert counts["s1"] == 2 * (1024 + 1024 + 1024 + 64 + 9216 + 64) + 32 == 24_864
    assert counts["s5"] / counts["s1"] >= 30
    for name in ("s1", "s5"):
        model = abstract_decoder(configs[name])  # shapes only, nothing allocated
        total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        assert total - 64 * shapes[name]["hidden_size"] == counts[name]  # tied embedding: V * d
    with pytest.raises(KeyError, match="'bad'.*head_dim"):
        family.shape_from_dict("bad", {"hidden_size": 8})


# ---- pretraining ------------------------------------------------------------------------------------
class _ToyTokenizer:
    """Character ids: 'a' -> 3, 'b' -> 4, ...; pad 0, eos 2."""

    pad_token_id, eos_token_id = 0, 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) - ord("a") + 3 for c in text]}


def test_encode_documents_and_target_mask_by_hand():
    docs = [corpus.Document("ab", "c"), corpus.Document("a", "bcd")]
    enc = pretrain.encode_documents(docs, _ToyTokenizer())
    np.testing.assert_array_equal(enc.tokens, [[3, 4, 5, 2, 0], [3, 4, 5, 6, 2]])
    np.testing.assert_array_equal(enc.answer_start, [2, 1])
    # targets are tokens[:, 1:]; row 0 has 3 real targets, row 1 has 4
    np.testing.assert_array_equal(pretrain.target_mask(enc, "all"), [[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(pretrain.target_mask(enc, "answer"), [[0, 1, 1, 0], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="loss_on"):
        pretrain.target_mask(enc, "prompt")


def test_next_token_loss_is_the_masked_mean_cross_entropy():
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from common.model import Decoder

    cfg = family.model_config(family.Shape(16, 32, 1, 2, 1, 8), vocab_size=11, eos_token_id=2)
    graphdef, state = nnx.split(Decoder(cfg, rngs=nnx.Rngs(1)))
    tokens = np.array([[3, 4, 5, 2, 0], [3, 6, 7, 8, 2]], np.int32)
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], np.float32)
    logits = jax.jit(lambda st, t: nnx.merge(graphdef, st)(t))(state, jnp.asarray(tokens[:, :-1]))
    logits = np.asarray(logits, np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    expected = (nll * mask).sum() / mask.sum()
    loss_fn = jax.jit(lambda st, t, m: pretrain.next_token_loss(nnx.merge(graphdef, st), t, m))
    got = float(loss_fn(state, jnp.asarray(tokens), jnp.asarray(mask)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert got == pytest.approx(math.log(11), abs=0.2)  # a fresh model (std 0.02) is near uniform


def test_width_scaled_lr_by_hand():
    assert pretrain.width_scaled_lr(3e-3, 128, 64) == pytest.approx(1.5e-3)
    assert pretrain.width_scaled_lr(3e-3, 32, 64) == pytest.approx(6e-3)
    assert pretrain.width_scaled_lr(3e-3, 32, 0) == 3e-3
    with pytest.raises(ValueError, match="width"):
        pretrain.width_scaled_lr(3e-3, 0, 64)


def test_pretraining_learns_the_corpus():
    docs = [corpus.Document("ab", "c"), corpus.Document("ba", "d")] * 16
    enc = pretrain.encode_documents(docs, _ToyTokenizer())
    cfg = family.model_config(family.Shape(16, 32, 1, 2, 1, 8), vocab_size=8, eos_token_id=2)
    result = pretrain.pretrain(cfg, enc, steps=40, batch_size=8, lr=3e-2, loss_on="answer")
    assert result.losses.shape == (40,)
    assert result.losses[0] == pytest.approx(math.log(8), abs=0.2)
    assert result.final_loss(5) < 0.05  # answer and eos are determined by the prompt
    with pytest.raises(ValueError, match="vocabulary"):
        pretrain.pretrain(cfg.replace(vocab_size=5), enc, steps=1, batch_size=2, lr=1e-3)


# ---- study wiring -----------------------------------------------------------------------------------
def test_study_config_is_checked():
    cfg = load_config(STUDY_CONFIG)
    del cfg["pretrain"]
    with pytest.raises(KeyError, match="pretrain"):
        study.check_study_config(cfg)
    cfg = load_config(STUDY_CONFIG)
    cfg.family = {"a": dict(cfg.family["s1"]), "b": dict(cfg.family["s2"])}
    with pytest.raises(ValueError, match="inter"):
        study.check_study_config(cfg)


def test_grid_gets_the_family_pool_and_checkpoints(tmp_path):
    cfg = load_config(REDUCED_CONFIG)
    layout = study.Layout(tmp_path)
    grid = study.load_grid(cfg, layout)
    assert tuple(grid.sizes) == ("r1", "r2", "r3")
    counts = family.param_counts(family.family_configs(cfg.family, 64, 2))
    assert dict(grid.param_counts) == {k: float(v) for k, v in counts.items()}
    run = expand_grid(grid)[0]
    argv = build_command(grid, run, layout.runs)
    assert f"--config={REPO / 'configs/miniature/grpo.py'}" in argv
    assert f"--config.model.path={tmp_path / 'checkpoints' / 'r1'}" in argv
    assert f"--config.data.source={layout.pool}" in argv
    assert "--config.num_steps=4" in argv and "--config.eval.every=2" in argv
    with pytest.raises(KeyError, match="grpo.nope"):
        cfg.grpo_overrides.grpo.nope = 1
        study.load_grpo_config(cfg, layout)


def test_corpus_leaves_out_the_trainers_heldout_questions(tmp_path):
    from rl_scaling.grpo.setup import load_pool, split_train_heldout

    cfg = load_config(REDUCED_CONFIG)
    cfg.corpus.exclude_heldout_levels = (1,)
    layout = study.Layout(tmp_path)
    docs = study.write_data(cfg, layout)
    grpo = study.load_grpo_config(cfg, layout)  # seed 0, the grid's only seed
    heldout = {p.question for p in split_train_heldout(grpo, load_pool(grpo))[1]}
    level1_heldout = {q for q in heldout if "+" in q}
    assert len(heldout) >= 8 and level1_heldout
    assert not level1_heldout & {d.prompt for d in docs}
    assert heldout - level1_heldout <= {d.prompt for d in docs}  # level 0 is not excluded
    assert study.read_corpus(layout) == docs


def test_children_see_one_device(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1 --xla_force_host_platform_device_count=8")
    with study.single_device_children():
        assert os.environ["XLA_FLAGS"] == "--xla_foo=1"
    assert os.environ["XLA_FLAGS"].endswith("device_count=8")


def test_seeds_and_bootstrap_reach_the_grid_and_the_fits(tmp_path):
    layout = study.Layout(tmp_path)
    full, reduced = load_config(STUDY_CONFIG), load_config(REDUCED_CONFIG)
    assert tuple(study.load_grid(full, layout).seeds) == (0, 1, 2)
    assert study.fit_request(full, layout, "C", "full").bootstrap == full.fit.bootstrap > 0
    assert tuple(study.load_grid(reduced, layout).seeds) == (0,)
    assert study.fit_request(reduced, layout, "C", "full").bootstrap == 0  # one seed: nothing to draw


def test_report_shows_the_bootstrap_interval_when_there_is_one():
    rep = {"k_max": 0.142, "n0": 2.06e4, "r2": {"L": 0.975, "log_L": 0.957}, "k": {"1e4": 0.1},
           "bootstrap": {"k_max": {"low": 0.098, "high": 0.566}, "n0": {"low": 249.0, "high": 5.46e5}}}
    row = report.fit_table({("C", "full"): rep})[-1]
    assert "| 0.142 (0.098–0.566) | 2.06e+04 (249–5.46e+05) |" in row
    del rep["bootstrap"]
    assert "| 0.142 | 2.06e+04 |" in report.fit_table({("C", "full"): rep})[-1]


def test_report_curve_summary_and_rank_correlation_by_hand():
    table = {"size": np.array([1e4, 1e4, 1e5, 1e5]), "step": np.array([0, 5, 0, 5]),
             "L": np.array([0.9, 0.7, 0.6, 0.3]), "C": np.array([0.0, 3e9, 0.0, 3e10]),
             "D": np.array([0, 160, 0, 160])}
    summary = report.curve_summary(table)
    assert summary[1e5] == {"L0": 0.6, "L_end": 0.3, "C_end": 3e10, "D_end": 160.0, "points": 2}
    assert report.spearman([1, 2, 3], [0.1, 0.3, 0.2]) == pytest.approx(0.5)
    assert report.spearman([1, 2], [1, 2]) is None


# ---- the data-reuse arm (finding 4) -----------------------------------------------------------------
def _full_pool_layout(tmp_path):
    """The full study's config and its GRPO pool table written under tmp_path (no corpus: not needed)."""
    cfg = load_config(STUDY_CONFIG)
    layout = study.Layout(tmp_path)
    corpus.write_problem_table(corpus.mixed_problems(cfg.levels, cfg.pool.per_level, cfg.pool.seed), layout.pool)
    return cfg, layout


def test_reuse_arm_trains_on_fixed_samples_stratified_and_in_curriculum_order(tmp_path):
    """The trainer's own split + reuse subset (split_train_heldout) under the arm's overrides: every tau sees
    num_steps x prompts samples, samples/tau distinct problems repeated tau times, each pass easy to hard,
    both levels in proportion, none of them held out."""
    from rl_scaling.grpo.setup import load_pool, split_train_heldout

    cfg, layout = _full_pool_layout(tmp_path)
    assert tuple(cfg.reuse.taus) == (1, 2, 4, 8, 16) and len(cfg.reuse.sizes) >= 2 and len(cfg.reuse.seeds) >= 2
    grpo = study.load_grpo_config(cfg, layout)
    for key, value in study.reuse_overrides(cfg).items():
        study._set_dotted(grpo, key, value)
    pool = load_pool(grpo)
    samples = cfg.reuse.num_steps * grpo.grpo.prompts_per_step
    for seed in cfg.reuse.seeds:
        grpo.seed = seed
        for tau in cfg.reuse.taus:
            grpo.data.reuse_tau = tau
            train, heldout = split_train_heldout(grpo, pool)
            unique = samples // tau
            assert len(train) == samples and len({p.id for p in train}) == unique
            assert train == train[:unique] * tau  # one pass repeated tau times
            levels = [p.difficulty for p in train[:unique]]
            assert levels == sorted(levels)  # curriculum order: easy (level 0) first
            assert abs(levels.count(0.0) / unique - 0.1) < 0.03  # stratified: level 0 is 1 in 10 of the pool
            assert not {p.id for p in train} & {p.id for p in heldout}
    rows = study.reuse_subsets(cfg, layout)
    assert [(r["tau"], r["seed"]) for r in rows] == [(t, s) for s in cfg.reuse.seeds for t in cfg.reuse.taus]
    assert all(r["samples"] == samples and r["problems"] == samples // r["tau"] for r in rows)
    assert all(r["questions"] <= min(r["problems"], 110) for r in rows)  # 110 distinct questions in levels 0-1


def test_reuse_grid_runs_every_size_tau_and_seed_with_the_arms_overrides(tmp_path):
    cfg, layout = _full_pool_layout(tmp_path)
    grid = study.reuse_grid(cfg, layout)
    runs = expand_grid(grid)
    assert len(runs) == len(cfg.reuse.sizes) * len(cfg.reuse.taus) * len(cfg.reuse.seeds)
    assert {r.coords["tau"] for r in runs} == set(cfg.reuse.taus)
    run = next(r for r in runs if r.coords["tau"] == 8 and r.coords["model"] == cfg.reuse.sizes[1])
    argv = build_command(grid, run, layout.reuse_runs)
    for flag in ("--config.data.reuse_tau=8", "--config.data.curriculum=True", "--config.data.difficulty_column=level",
                 f"--config.num_steps={cfg.reuse.num_steps}", "--config.eval.every=0",
                 f"--config.model.path={tmp_path / 'checkpoints' / cfg.reuse.sizes[1]}",
                 f"--config.data.source={layout.pool}", f"--workdir={layout.reuse_runs / run.run_id}"):
        assert flag in argv
    assert tuple(study.load_grid(cfg, layout).sizes) == tuple(cfg.family)  # the main grid is untouched
    cfg.reuse.sizes = ("s9",)
    with pytest.raises(KeyError, match="s9"):
        study.check_study_config(cfg)


def test_published_names_and_links(tmp_path):
    assert study.published_name(study.Path("fits/C_full/loss_vs_C.png")) == "loss_vs_C_full.png"
    assert study.published_name(study.Path("fits/D_inter/k_vs_n.png")) == "k_vs_n_D_inter.png"
    assert study.published_name(study.Path("reuse/data_reuse.png")) == "reuse_data_reuse.png"
    layout = study.Layout(tmp_path / "out")
    (layout.out / "fits" / "C_full").mkdir(parents=True)
    (layout.out / "fits" / "C_full" / "k_vs_n.png").write_bytes(b"png")
    layout.table.write_text("a\n")
    layout.report.write_text("- C / full: [k_vs_n](fits/C_full/k_vs_n.png)\n")
    written = study.publish(layout.out, tmp_path / "docs")
    assert sorted(p.name for p in written) == ["k_vs_n_C_full.png", "report.md", "table.csv"]
    assert (tmp_path / "docs" / "report.md").read_text() == "- C / full: [k_vs_n](k_vs_n_C_full.png)\n"


def test_report_verdicts_and_n0_pinning_by_hand():
    rep = {"bounds": {"log10_n0": [2.0, 8.0]}, "bootstrap": {"log10_n0": {"low": 4.0, "high": 5.0}}}
    pin = report.n0_pinning(rep)
    assert pin["pinned"] and pin["low"] == pytest.approx(1e4) and pin["search"] == pytest.approx([1e2, 1e8])
    assert report.finding_3_verdict(pin, largest_n=1e6) == "shown"
    assert report.finding_3_verdict(pin, largest_n=5e4) == "growth only"
    rep["bootstrap"]["log10_n0"]["low"] = 2.05  # within 0.1 decade of the lower bound
    assert not report.n0_pinning(rep)["pinned"]
    assert report.finding_3_verdict(report.n0_pinning(rep), 1e6) == "not pinned"
    assert report.n0_pinning({"bounds": {"log10_n0": [2.0, 8.0]}}) is None
    assert report.finding_3_verdict(None, 1e6) == "not pinned"
    assert [report.finding_1_verdict(r) for r in (0.9, 0.8, 0.3, 0.0, None)] == \
        ["shown", "shown", "weakly shown", "not shown", "not shown"]
    assert report.finding_2_verdict(0.95, 0.08) == "shown"
    assert report.finding_2_verdict(0.95, None) == "shown"
    assert report.finding_2_verdict(0.95, 0.2) == "not shown" == report.finding_2_verdict(0.8, 0.01)


def test_report_reuse_table_and_finding_4_lines():
    from rl_scaling.scaling.reuse import fit_reuse

    table = {"size": np.repeat([5e4], 8), "tau": np.repeat([1.0, 1.0, 4.0, 4.0], 2),
             "seed": np.tile([0.0, 0.0, 1.0, 1.0], 2), "step": np.tile([0, 40], 4),
             "L": np.array([0.6, 0.41, 0.6, 0.43, 0.6, 0.43, 0.6, 0.41])}
    reuse = fit_reuse(table)
    reuse.update(num_steps=40, subsets=[{"tau": 1, "seed": 0, "samples": 1280, "problems": 1280, "questions": 110},
                                        {"tau": 4, "seed": 0, "samples": 1280, "problems": 320, "questions": 102}])
    rows = report.reuse_table(reuse)
    assert rows[0] == "40 GRPO steps per run; L before RL (seed mean): N = 50,000: 0.600"
    assert rows[-2] == "| 1 | 1280 | 1280 | 110 | 0.420 (0.410, 0.430) |"
    assert rows[-1] == "| 4 | 1280 | 320 | 102 | 0.420 (0.430, 0.410) |"
    curves = {5e4: {"L_end": 0.42}, 1e5: {"L_end": 0.3}, 2e5: {"L_end": 0.2}}
    line = report.finding_checks({}, curves, reuse)[-1]
    assert line.startswith("- **4. Data reuse, N = 50,000: shown**") and "kept at tau = 4: 1.00" in line


# ---- the reduced study, end to end ------------------------------------------------------------------
@pytest.mark.slow
def test_reduced_miniature_end_to_end(tmp_path):
    """configs/miniature/reduced.py: 3 sizes pretrained, 4 GRPO steps each through the grid runner and
    tools/train_grpo.py, gathered, fitted (full and inter, C and D), the reuse arm (r1 at tau 1 and 4) run and
    fitted, reported. ~90 s on 2 idle cores."""
    from common import load_pretrained

    cfg = load_config(REDUCED_CONFIG)
    result = study.run_study(cfg, tmp_path)
    layout = study.Layout(tmp_path)

    table = table_lib.read_metrics_table(layout.table)
    assert set(table_lib.REQUIRED_COLUMNS) <= set(table)
    assert table_lib.table_length(table) == 3 * 3  # 3 sizes x evaluations at steps 0, 2, 4
    np.testing.assert_array_equal(np.sort(np.unique(table["step"])), [0, 2, 4])
    np.testing.assert_array_equal(table["D"][table["step"] == 4], [32, 32, 32])  # 4 steps x 8 prompts
    counts = family.param_counts(family.family_configs(cfg.family, 64, 2))
    assert sorted(np.unique(table["size"])) == sorted(float(n) for n in counts.values())
    assert np.all((table["L"] >= 0) & (table["L"] <= 1))
    for n in np.unique(table["size"]):  # C grows with the steps; 6 N C-per-token means C / N is size-free
        c = table["C"][table["size"] == n]
        assert c[0] == 0 and np.all(np.diff(c) > 0)

    for x in ("C", "D"):
        for protocol in ("full", "inter"):
            rep = json.loads((layout.fit_dir(x, protocol) / "fit.json").read_text())
            assert rep["x"] == x and rep["protocol"] == protocol
            assert {"k_max", "n0", "e0", "r2"} <= set(rep)
            assert (layout.fit_dir(x, protocol) / f"loss_vs_{x}.png").stat().st_size > 1000
    assert "prediction" in result["fits"][("C", "inter")]
    text = layout.report.read_text()
    assert "K_max" in text and "| r3 |" in text and "fits/C_inter/predicted_vs_observed.png" in text

    reuse_table = table_lib.read_metrics_table(layout.reuse_table)  # the reuse arm: r1 at tau 1 and 4
    np.testing.assert_array_equal(np.unique(reuse_table["tau"]), [1, 4])
    np.testing.assert_array_equal(reuse_table["D"][reuse_table["step"] == 4], [32, 32])  # same samples for both
    reuse_fit = json.loads((layout.reuse / "fit.json").read_text())
    assert [r["problems"] for r in reuse_fit["subsets"]] == [32, 8]
    assert (layout.reuse / "data_reuse.png").stat().st_size > 1000
    assert "## Data reuse (finding 4)" in text and "4. Data reuse, N = " in text

    model, tokenizer = load_pretrained(layout.checkpoint("r2"))  # a pretrained checkpoint, tokenizer inside
    assert model.config.vocab_size == len(tokenizer) and tokenizer.eos_token_id == 2
    assert study.run_grpo_grid(cfg, layout)["skipped"] == [f"base-r{i}-seed0" for i in (1, 2, 3)]
    assert study.run_reuse_grid(cfg, layout)["skipped"] == ["reuse-r1-tau1-seed0", "reuse-r1-tau4-seed0"]
