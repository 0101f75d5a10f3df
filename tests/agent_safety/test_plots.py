"""The report's PDR and JDR figures on a 28-condition result (4 systems x 7 attack modes, scripted demo
policy): one panel per system and attack, safe and dangerous tasks told apart in each, one legend."""

import pytest

from agent_safety.attack import ATTACK_MODES
from agent_safety.plots import KIND_COLOURS, jdr_figure, pdr_figure, plot_jdr, plot_pdr
from agent_safety.report import RESULTS_FILE
from agent_safety.run import run_experiment
from agent_safety.run_config import default_config
from agent_safety.store import read_records
from agent_safety.tables import summary_rows

SYSTEMS = ("camel", "autogen", "metagpt", "autogpt")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    c = default_config()
    c.tasks.limit_per_kind = 1
    c.systems, c.attacks, c.rounds = SYSTEMS, ATTACK_MODES, 2
    workdir = tmp_path_factory.mktemp("plots")
    run_experiment(c, workdir, progress=False)
    rows = summary_rows(read_records(workdir / RESULTS_FILE))
    assert len({(r["system"], r["attack"]) for r in rows}) == 28 and len(rows) == 56
    return rows


def _grid(fig):
    """The panels' (row label's first line, title) in reading order."""
    return [(ax.get_ylabel().split("\n")[0], ax.get_title()) for ax in fig.axes]


def _colours(artists):
    return [tuple(round(c, 3) for c in a.get_facecolor()[:3]) if hasattr(a, "get_width")
            else a.get_color() for a in artists]


@pytest.mark.parametrize("make", [pdr_figure, jdr_figure])
def test_one_panel_per_system_and_attack_with_one_legend(rows, make):
    fig = make(rows)
    assert len(fig.axes) == 28
    labels, titles = zip(*_grid(fig))
    assert titles[:7] == ATTACK_MODES and set(titles[7:]) == {""}
    assert [labels[i] for i in range(0, 28, 7)] == sorted(SYSTEMS)  # the summary rows' order
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)


def test_pdr_panels_hold_a_safe_and_a_dangerous_bar(rows):
    import matplotlib.colors as mcolors

    fig = pdr_figure(rows)
    expected = [tuple(round(c, 3) for c in mcolors.to_rgb(KIND_COLOURS[k])) for k in ("safe", "dangerous")]
    assert all(_colours(ax.patches) == expected for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["safe tasks", "dangerous tasks"]
    heights = {(r["system"], r["attack"], r["tasks"]): r["PDR"] for r in rows}
    autogpt_hi = fig.axes[7 + 1].patches  # second row, second column
    assert [b.get_height() for b in autogpt_hi] == [heights[("autogpt", "HI", k)] for k in ("safe", "dangerous")]


def test_jdr_panels_hold_a_line_per_task_kind_over_the_rounds(rows):
    fig = jdr_figure(rows)
    assert all(_colours(ax.lines) == [KIND_COLOURS["safe"], KIND_COLOURS["dangerous"]] for ax in fig.axes)
    assert all(list(line.get_xdata()) == [1, 2] for ax in fig.axes for line in ax.lines)  # rounds = 2


def test_a_condition_not_run_is_an_empty_panel_and_files_are_written(rows, tmp_path):
    some = [r for r in rows if not (r["system"] == "autogen" and r["attack"] == "jailbreak")]
    fig = pdr_figure(some)
    empty = fig.axes[6]  # autogen (first row), jailbreak (last column)
    assert not empty.patches and [t.get_text() for t in empty.texts] == ["not run"]
    for plot in (plot_pdr, plot_jdr):
        path = plot(rows, tmp_path / f"{plot.__name__}.png")
        assert path.stat().st_size > 20_000
