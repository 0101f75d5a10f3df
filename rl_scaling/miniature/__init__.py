"""A CPU miniature of the whole RL scaling study, one command (`python tools/miniature.py --out DIR`).

A family of tiny Qwen2-architecture decoders is pretrained on synthetic arithmetic with worked answers
(`corpus`, `pretrain`) through a sentencepiece tokenizer trained on that corpus (`tokenizer`); each size is
then GRPO-trained with one recipe through `rl_scaling.grid` and `tools/train_grpo.py`; the held-out curves
are gathered into one table and fitted with `rl_scaling.scaling.fit_table` (`study`), and `report` writes
`<out>/report.md`. Sizes are data (`family` in `defaults`, the settings every configs/miniature file starts
from).
"""
