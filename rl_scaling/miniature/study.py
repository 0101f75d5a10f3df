"""The miniature study, stage by stage: data -> tokenizer -> pretraining -> GRPO grid -> table -> fits.

Every stage writes its outputs under `out` and is skipped when they exist, so a killed study resumes
where it stopped (the grid runner resumes its runs the same way).

    <out>/data/rl_pool.jsonl          the GRPO problem table (trainer's data.source)
    <out>/data/corpus.txt             the pretraining documents, one per line
    <out>/tokenizer/                  sentencepiece model + transformers tokenizer
    <out>/checkpoints/<size>/         pretrained checkpoints (common.checkpoint format, tokenizer inside)
    <out>/pretrain/<size>.json        N, shape, loss curve, seconds of each pretraining
    <out>/runs/<run_id>/              one GRPO run per size and seed (rl_scaling.grid.run)
    <out>/table.csv                   variant, size, seed, step, C, D, L, ... (rl_scaling.grid.gather)
    <out>/fits/<X>_<protocol>/        fit.json and plots (rl_scaling.scaling.fit_table)
    <out>/reuse/runs/<run_id>/        the data-reuse arm (finding 4): one GRPO run per size, tau and seed
    <out>/reuse/table.csv             its gathered table (a `tau` column)
    <out>/reuse/fit.json, data_reuse.png   final L against tau (rl_scaling.scaling.reuse) and its figure
    <out>/timings.json                wall seconds and load averages per stage
    <out>/report.md                   the summary (rl_scaling.miniature.report)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from pathlib import Path

import ml_collections
from tqdm.auto import tqdm

from common.checkpoint.orbax_io import is_checkpoint_dir, save_checkpoint
from common.config_file import load_config
from rl_scaling.grid.expand import flatten, load_grid_config
from rl_scaling.grid.gather import gather
from rl_scaling.grid.run import LOG_FILE, run_grid
from rl_scaling.grpo.setup import load_pool, split_train_heldout
from rl_scaling.miniature import corpus, family, pretrain
from rl_scaling.miniature import tokenizer as tokenizer_lib
from rl_scaling.scaling import plots
from rl_scaling.scaling import reuse as reuse_lib
from rl_scaling.scaling import table as table_lib
from rl_scaling.scaling.fit_table import FitRequest, fit_table
from rl_scaling.scaling.report import size_key

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIRED_KEYS = ("levels", "corpus", "pool", "tokenizer", "family", "pretrain", "grid", "grpo_config", "fit")
# The test suite fakes 8 CPU devices through XLA_FLAGS; a GRPO child process must see the one real device.
FAKE_DEVICES_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Paths of one study's outputs (see the module docstring)."""

    out: Path

    @property
    def pool(self) -> Path:
        return self.out / "data" / "rl_pool.jsonl"

    @property
    def corpus(self) -> Path:
        return self.out / "data" / "corpus.txt"

    @property
    def tokenizer(self) -> Path:
        return self.out / "tokenizer"

    def checkpoint(self, size: str) -> Path:
        return self.out / "checkpoints" / size

    def pretrain_record(self, size: str) -> Path:
        return self.out / "pretrain" / f"{size}.json"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def table(self) -> Path:
        return self.out / "table.csv"

    def fit_dir(self, x: str, protocol: str) -> Path:
        return self.out / "fits" / f"{x}_{protocol}"

    @property
    def reuse(self) -> Path:
        return self.out / "reuse"

    @property
    def reuse_runs(self) -> Path:
        return self.reuse / "runs"

    @property
    def reuse_table(self) -> Path:
        return self.reuse / "table.csv"

    @property
    def timings(self) -> Path:
        return self.out / "timings.json"

    @property
    def report(self) -> Path:
        return self.out / "report.md"


def check_study_config(cfg) -> None:
    """Raise naming the missing keys of a study config (configs/miniature/study.py has them all)."""
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise KeyError(f"study config lacks key(s) {missing}; keys found: {sorted(cfg)}")
    if len(cfg.family) < 3 and "inter" in cfg.fit.protocols:
        raise ValueError(f"the inter-model protocol needs >= 3 sizes, family has {len(cfg.family)}")
    if "reuse" in cfg and cfg.reuse.taus:
        unknown = [s for s in cfg.reuse.sizes if s not in cfg.family]
        if unknown:
            raise KeyError(f"reuse.sizes {unknown} are not in the family {list(cfg.family)}")


def repo_path(path: str | Path) -> Path:
    """A config's path: absolute as is, relative to the repository root otherwise."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


class StageClock:
    """Wall seconds and 1-minute load averages per stage, written to timings.json after every stage.

    A resumed study adds the seconds of its own stages to what the earlier attempt recorded.
    """

    def __init__(self, path: Path):
        self.path = path
        self.record = json.loads(path.read_text()) if path.exists() else {"stages": {}}

    @contextlib.contextmanager
    def stage(self, name: str):
        load_before, start = os.getloadavg()[0], time.perf_counter()
        tqdm.write(f"[miniature] {name} ...")
        yield
        seconds = time.perf_counter() - start
        previous = self.record["stages"].get(name, {}).get("seconds", 0.0)
        self.record["stages"][name] = {"seconds": previous + seconds, "load_1min_before": load_before,
                                       "load_1min_after": os.getloadavg()[0]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.record, indent=1) + "\n")
        tqdm.write(f"[miniature] {name}: {seconds:.1f} s")

    def total_seconds(self) -> float:
        return sum(s["seconds"] for s in self.record["stages"].values())


# ---- stage 1: data -----------------------------------------------------------------------------------
def load_grpo_config(cfg, out: Layout) -> ml_collections.ConfigDict:
    """The GRPO recipe config with the study's trainer overrides and pool applied (for the held-out split)."""
    grpo = load_config(repo_path(cfg.grpo_config))
    grpo.unlock()
    for key, value in flatten(cfg.grpo_overrides):
        _set_dotted(grpo, key, value)
    grpo.data.source = str(out.pool)
    return grpo


def _set_dotted(config, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        if part not in node:
            raise KeyError(f"grpo_overrides: no key {key!r} in the GRPO config")
        node = node[part]
    if leaf not in node:
        raise KeyError(f"grpo_overrides: no key {key!r} in the GRPO config")
    node[leaf] = value


def heldout_questions(cfg, out: Layout) -> set[str]:
    """Questions the trainer holds out, over every seed of the grid: the trainer's own loader and split
    (`load_pool`, `split_train_heldout`) on the written pool table."""
    grpo = load_grpo_config(cfg, out)
    pool = load_pool(grpo)
    questions = set()
    for seed in load_grid(cfg, out).seeds:
        grpo.seed = int(seed)
        questions |= {p.question for p in split_train_heldout(grpo, pool)[1]}
    return questions


def write_data(cfg, out: Layout) -> list[corpus.Document]:
    """The GRPO pool table and the pretraining documents (held-out questions of the levels in
    corpus.exclude_heldout_levels removed); returns the documents."""
    pool = corpus.mixed_problems(cfg.levels, cfg.pool.per_level, cfg.pool.seed)
    corpus.write_problem_table(pool, out.pool)
    heldout = heldout_questions(cfg, out)
    excluded_levels = {float(level) for level in cfg.corpus.exclude_heldout_levels}
    excluded = {p.question for p in pool if p.question in heldout and p.difficulty in excluded_levels}
    docs = corpus.pretraining_documents(cfg.levels, cfg.corpus.size, cfg.corpus.seed, excluded,
                                        cfg.corpus.wrong_answer_rate)
    out.corpus.write_text("".join(f"{d.prompt}\t{d.answer}\n" for d in docs), encoding="utf-8")
    return docs


def read_corpus(out: Layout) -> list[corpus.Document]:
    lines = out.corpus.read_text(encoding="utf-8").splitlines()
    return [corpus.Document(*line.split("\t")) for line in lines]


# ---- stages 2-3: tokenizer and pretraining -------------------------------------------------------------
def pretrain_family(cfg, out: Layout, docs, tokenizer) -> dict[str, dict]:
    """Pretrain every size that has no checkpoint yet; returns {size: pretraining record}."""
    configs = family.family_configs(cfg.family, len(tokenizer), tokenizer.eos_token_id)
    encoded = pretrain.encode_documents(docs, tokenizer)
    p = cfg.pretrain
    records = {}
    for name, model_cfg in configs.items():
        record_path = out.pretrain_record(name)
        if not (is_checkpoint_dir(out.checkpoint(name)) and record_path.exists()):
            lr = pretrain.width_scaled_lr(p.lr, model_cfg.hidden_size, p.lr_reference_width)
            with tqdm(total=p.steps, desc=f"pretrain {name}", leave=False) as bar:
                result = pretrain.pretrain(model_cfg, encoded, steps=p.steps, batch_size=p.batch_size, lr=lr,
                                           warmup_steps=p.warmup_steps, weight_decay=p.weight_decay,
                                           loss_on=p.loss_on, seed=p.seed, progress=bar)
            save_checkpoint(out.checkpoint(name), result.model, tokenizer, step=p.steps,
                            source="rl_scaling.miniature.pretrain")
            record = {"size": name, "N": family.param_counts({name: model_cfg})[name],
                      "shape": dict(cfg.family[name]), "steps": p.steps, "lr": lr, "seconds": result.seconds,
                      "final_loss": result.final_loss(), "loss_curve": result.losses[::10].tolist()}
            record_path.parent.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=1) + "\n")
            tqdm.write(f"[miniature] pretrained {name} (N = {record['N']}): loss {record['final_loss']:.3f} "
                       f"nats/token in {result.seconds:.0f} s")
        records[name] = json.loads(record_path.read_text())
    return records


# ---- stage 4: the GRPO grid ----------------------------------------------------------------------------
def load_grid(cfg, out: Layout) -> ml_collections.ConfigDict:
    """The grid config (configs/miniature/grid.py) completed with this study's sizes, N and paths."""
    grid = load_grid_config(repo_path(cfg.grid))
    grid.unlock()
    grid.base_config = str(repo_path(cfg.grpo_config))
    grid.sizes = tuple(cfg.family.keys())
    grid.seeds = tuple(int(seed) for seed in cfg.seeds)
    # N is the non-embedding count, so any vocabulary gives the same numbers.
    grid.param_counts = {name: float(n) for name, n in family.param_counts(
        family.family_configs(cfg.family, vocab_size=8, eos_token_id=2)).items()}
    overrides = dict(flatten(grid.get("overrides", {})))
    overrides.update(flatten(cfg.grpo_overrides))
    overrides["data.source"] = str(out.pool)
    grid.overrides = _nest(overrides)
    grid.templated_overrides = {"model": {"path": str(out.out / "checkpoints" / "{model}")}}
    return grid


def _nest(flat: dict) -> dict:
    tree = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


@contextlib.contextmanager
def single_device_children():
    """XLA_FLAGS without a forced host device count while GRPO children run (restored afterwards)."""
    before = os.environ.get("XLA_FLAGS")
    if before is not None:
        os.environ["XLA_FLAGS"] = FAKE_DEVICES_FLAG.sub("", before).strip()
    try:
        yield
    finally:
        if before is not None:
            os.environ["XLA_FLAGS"] = before


def run_grpo_grid(cfg, out: Layout) -> dict:
    """Every unfinished GRPO run, one after another (rl_scaling.grid.run); raises if one fails."""
    grid = load_grid(cfg, out)
    with single_device_children():
        summary = run_grid(grid, out.runs)
    if summary["failed"]:
        logs = [str(out.runs / run_id / LOG_FILE) for run_id in summary["failed"]]
        raise RuntimeError(f"GRPO run(s) failed {summary['failed']}; logs: {logs}")
    return summary


# ---- stage 5: the data-reuse arm (finding 4) ------------------------------------------------------------
def reuse_overrides(cfg) -> dict:
    """Trainer overrides of every reuse run (flat): its steps, evaluation at the start and end only, and the
    pool's difficulty column, so that `data.reuse_tau` draws difficulty-stratified subsets in curriculum order
    (rl_scaling.data.reuse_subset, as configs/grids/data_reuse.py)."""
    r = cfg.reuse
    return {"num_steps": int(r.num_steps), "eval.every": 0, "data.curriculum": True,
            "data.difficulty_column": str(r.difficulty_column)}


def reuse_grid(cfg, out: Layout) -> ml_collections.ConfigDict:
    """The reuse arm's grid: the study's grid (load_grid) cut to reuse.sizes and reuse.seeds, variant "reuse",
    tau in reuse.taus reaching the trainer as data.reuse_tau."""
    grid = load_grid(cfg, out)
    r = cfg.reuse
    grid.name = f"{grid.name}-reuse"
    grid.variants = ("reuse",)
    grid.sizes = tuple(r.sizes)
    grid.seeds = tuple(int(seed) for seed in r.seeds)
    grid.settings = ml_collections.ConfigDict({"tau": tuple(int(t) for t in r.taus)})
    grid.override_keys = ml_collections.ConfigDict({**grid.override_keys.to_dict(), "tau": "data.reuse_tau"})
    overrides = dict(flatten(grid.overrides))
    overrides.update(reuse_overrides(cfg))
    grid.overrides = _nest(overrides)
    return grid


def reuse_subsets(cfg, out: Layout) -> list[dict]:
    """What each reuse run trains on, from the trainer's own split and reuse subset (`split_train_heldout`):
    [{"tau", "seed", "samples", "problems" (distinct pool entries), "questions" (distinct question texts)}]."""
    grpo = load_grpo_config(cfg, out)
    for key, value in reuse_overrides(cfg).items():
        _set_dotted(grpo, key, value)
    pool = load_pool(grpo)
    rows = []
    for seed in cfg.reuse.seeds:
        for tau in cfg.reuse.taus:
            grpo.seed, grpo.data.reuse_tau = int(seed), int(tau)
            train = split_train_heldout(grpo, pool)[0]
            rows.append({"tau": int(tau), "seed": int(seed), "samples": len(train),
                         "problems": len({p.id for p in train}), "questions": len({p.question for p in train})})
    return rows


def run_reuse_grid(cfg, out: Layout) -> dict:
    """Every unfinished reuse run (rl_scaling.grid.run); raises if one fails."""
    with single_device_children():
        summary = run_grid(reuse_grid(cfg, out), out.reuse_runs)
    if summary["failed"]:
        logs = [str(out.reuse_runs / run_id / LOG_FILE) for run_id in summary["failed"]]
        raise RuntimeError(f"reuse run(s) failed {summary['failed']}; logs: {logs}")
    return summary


def fit_reuse_arm(cfg, out: Layout) -> dict:
    """Gather the reuse runs, fit final L against tau (rl_scaling.scaling.reuse), add the subsets' sizes;
    writes <out>/reuse/table.csv, fit.json and data_reuse.png and returns the fit dict (sizes keyed by N)."""
    table = gather(out.reuse_runs, reuse_grid(cfg, out))
    table_lib.write_metrics_table(table, out.reuse_table)
    rep = reuse_lib.fit_reuse(table)
    rep["subsets"] = reuse_subsets(cfg, out)
    rep["num_steps"] = int(cfg.reuse.num_steps)
    rep["sizes"] = {size_key(n): v for n, v in sorted(rep["sizes"].items())}
    (out.reuse / "fit.json").write_text(json.dumps(rep, indent=1) + "\n")
    (out.reuse / "data_reuse.png").write_bytes(plots.figure_png(plots.plot_reuse_fit(rep)))
    for n, s in rep["sizes"].items():
        tqdm.write(f"[miniature] reuse, N = {n}: final L by tau {s['taus']}: "
                   + ", ".join(f"{v:.3f}" for v in s["mean_L_final"])
                   + f"; rise {s['rise']:.3f}, gain {s['gain']:.3f}: {s['verdict']}")
    return rep


def has_reuse_arm(cfg) -> bool:
    return "reuse" in cfg and bool(cfg.reuse.taus)


# ---- stages 5-6: table and fits ------------------------------------------------------------------------
def gather_table(cfg, out: Layout) -> Path:
    table = gather(out.runs, load_grid(cfg, out))
    return table_lib.write_metrics_table(table, out.table)


def fit_request(cfg, out: Layout, x: str, protocol: str) -> FitRequest:
    """One fit of the study's table (what `tools/fit_scaling_law.py` does from the command line)."""
    # Uncertainty needs seeds to draw from.
    replicates = cfg.fit.get("bootstrap", 0) if len(cfg.seeds) > 1 else 0
    return FitRequest(metrics=out.table, x=x, out=out.fit_dir(x, protocol), protocol=protocol,
                      objective=cfg.fit.objective, bootstrap=replicates, tensorboard=False)


def run_fits(cfg, out: Layout) -> dict[tuple[str, str], dict]:
    """Every (X, protocol) fit of cfg.fit; returns {(X, protocol): fit.json dict}."""
    reports = {}
    for x in cfg.fit.xs:
        for protocol in cfg.fit.protocols:
            reports[(x, protocol)] = fit_table(fit_request(cfg, out, x, protocol))
            tqdm.write(f"[miniature] fit of L vs {x}, protocol {protocol}: {out.fit_dir(x, protocol)}")
            tqdm.write(format_fit(reports[(x, protocol)]))
    return reports


def _num(value, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def format_fit(rep: dict) -> str:
    """K_max, N_0, R2 and (inter/intra) the prediction error of one fit.json dict, on a few lines."""
    line = (f"  {rep['protocol']} fit of L vs {rep['x']}: K_max = {_num(rep['k_max'])}, "
            f"N_0 = {_num(rep['n0'])}, R2(L) = {_num(rep['r2']['L'], '.3f')}, "
            f"R2(ln L) = {_num(rep['r2']['log_L'], '.3f')}")
    if "prediction" in rep:
        pred = rep["prediction"]
        line += (f"\n  extrapolation to N = {_num(pred.get('held_out_size'))}: k extrapolated "
                 f"{_num(pred.get('k_extrapolated'))} vs fitted alone {_num(pred.get('k_free_fit'))}; "
                 f"RMSE(L) = {_num(pred['rmse'])}, MAPE(L) = {_num(100 * pred['mape'], '.1f')} %")
    return line


# ---- publishing --------------------------------------------------------------------------------------
def published_name(relative: Path) -> str:
    """The flat name of a study output in a published folder: fits/C_inter/k_vs_n.png -> k_vs_n_C_inter.png,
    fits/C_full/loss_vs_C.png -> loss_vs_C_full.png, reuse/table.csv -> reuse_table.csv."""
    parts = relative.parts
    if parts[0] == "fits":
        x, protocol = parts[1].split("_", 1)
        stem = relative.stem if f"_{x}" in relative.stem else f"{relative.stem}_{x}"
        return f"{stem}_{protocol}{relative.suffix}"
    return "_".join(parts)


def publish(out: str | Path, dest: str | Path) -> list[Path]:
    """Copy a finished study's report, tables and figures into `dest` (e.g. docs/miniature) under flat names
    (`published_name`), the report's links rewritten to them, so a document shows exactly one run's output.
    Returns the written paths."""
    layout, dest = Layout(Path(out)), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sources = [layout.table, *sorted((layout.out / "fits").glob("*/*.png"))]
    sources += [p for p in (layout.reuse_table, layout.reuse / "data_reuse.png", layout.reuse / "fit.json") if p.exists()]
    report = layout.report.read_text(encoding="utf-8")
    written = []
    for source in sources:
        relative = source.relative_to(layout.out)
        target = dest / published_name(relative)
        target.write_bytes(source.read_bytes())
        report = report.replace(f"]({relative.as_posix()})", f"]({target.name})")
        written.append(target)
    (dest / "report.md").write_text(report, encoding="utf-8")
    return [*written, dest / "report.md"]


# ---- the whole study -----------------------------------------------------------------------------------
def run_study(cfg, out: str | Path) -> dict:
    """Run (or resume) every stage; returns {"fits": {(X, protocol): fit.json dict}, "reuse": the reuse fit
    dict or None, "report": path}."""
    from rl_scaling.miniature import report as report_lib

    check_study_config(cfg)
    layout = Layout(Path(out).absolute())
    layout.out.mkdir(parents=True, exist_ok=True)
    (layout.out / "study_config.json").write_text(cfg.to_json_best_effort(indent=2) + "\n")
    clock = StageClock(layout.timings)
    if not (layout.pool.exists() and layout.corpus.exists()):
        with clock.stage("data"):
            write_data(cfg, layout)
    docs = read_corpus(layout)
    if (layout.tokenizer / "tokenizer.json").exists():
        tokenizer = tokenizer_lib.load_tokenizer_dir(layout.tokenizer)
    else:
        with clock.stage("tokenizer"):
            tokenizer = tokenizer_lib.build_tokenizer([d.text for d in docs], cfg.tokenizer.vocab_size,
                                                      layout.tokenizer)
    with clock.stage("pretrain"):
        records = pretrain_family(cfg, layout, docs, tokenizer)
    with clock.stage("grpo"):
        run_grpo_grid(cfg, layout)
    if has_reuse_arm(cfg):
        with clock.stage("reuse"):
            run_reuse_grid(cfg, layout)
    with clock.stage("fit"):
        gather_table(cfg, layout)
        fits = run_fits(cfg, layout)
        reuse = fit_reuse_arm(cfg, layout) if has_reuse_arm(cfg) else None
    path = report_lib.write_report(layout, cfg, records, fits, clock.record, reuse)
    tqdm.write(f"[miniature] total {clock.total_seconds():.0f} s; report: {path}")
    return {"fits": fits, "reuse": reuse, "report": path}
