"""A CPU miniature of the whole RL scaling study, one command:

    python -m rl_scaling.miniature --out runs/miniature                    # configs/miniature/study.py
    python -m rl_scaling.miniature --config configs/miniature/reduced.py --out /tmp/mini   # ~1 min

A family of tiny Qwen2-architecture decoders is pretrained on synthetic arithmetic with worked answers
(`corpus`, `pretrain`) through a sentencepiece tokenizer trained on that corpus (`tokenizer`); each size is
then GRPO-trained with one recipe through `rl_scaling.grid` and `rl_scaling.train`; the held-out curves are
gathered into one table and fitted with `rl_scaling.fit` (`study`), and `report` writes `<out>/report.md`.
Sizes are data (`family`, configs/miniature/study.py).
"""
