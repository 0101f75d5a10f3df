"""Experiment grids: expand a grid config into runs (`expand`), run them resumably (`run`), gather their
metrics into one table (`gather`). The command is `python tools/grid.py run|gather`.

A grid config is a Python file with `get_config()` returning an ml_collections.ConfigDict:

    name          str, for messages
    base_config   path of the training config every run starts from
    sizes         model config names, e.g. ("qwen2_5_0_5b", "qwen2_5_1_5b")
    param_counts  (optional) {model name: N}, the table's `size` column; models not listed get the
                  non-embedding count of their common.config preset (rl_scaling.accounting)
    variants      e.g. ("base", "instruct")
    seeds         e.g. (0, 1, 2)
    settings      {name: (values...)}: swept too, e.g. {"tau": (1, 2, 4)} or {"G": (4, 8)}
    overrides     nested {key: value}: fixed trainer overrides for every run (flattened to a.b=v)
    override_keys {coordinate: trainer key}: how model/variant/seed/settings reach the trainer,
                  e.g. {"tau": "data.reuse_tau"}; a coordinate not named passes under its own
                  name, one mapped to "" is not passed
    templated_overrides  (optional) nested {key: template}: overrides built from the coordinates,
                  e.g. {"model": {"path": "checkpoints/{model}-{variant}"}}
    command       (optional) argv template; see run.DEFAULT_COMMAND
    metric_keys   (optional) {column: metrics.jsonl key}; see gather.DEFAULT_METRIC_KEYS

Every run gets a stable id (from its coordinates, e.g. "base-qwen2_5_0_5b-tau4-seed0") and the
workdir <root>/<run_id>. A run is finished when <workdir>/DONE exists; finished runs are skipped,
so a killed or crashed runner is resumed by running it again.
"""
