"""The RL post-training scaling law: forms, fits, protocols, plots and the budget planner.

  law.py          the functional forms (saturating k(N), the appendix form, C <-> D intercepts)
  table.py        metrics-table I/O (CSV / parquet) and row selection
  curves.py       table rows -> per-seed points -> seed-averaged curves; bootstrap weights; splits
  fit.py          the saturating-law fit (profiled intercepts + differential evolution), free-k fit
  alternative.py  the appendix form's fit (multi-start least squares)
  protocols.py    full / inter-model / intra-model protocols and prediction errors
  bootstrap.py    bootstrap over seeds of K_max and N_0
  report.py       fit.json written and read back, and summarised
  fit_table.py    a metrics table -> fit.json and the figures (one fit, end to end)
  plots.py        the figures
  planner.py      which size for a compute/data budget
  synthetic.py    tables drawn from a known law (tests, demos)

Commands: tools/fit_scaling_law.py, tools/plan_size.py, tools/grid.py.
"""
