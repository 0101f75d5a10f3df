"""Math problems for GRPO: loaders, prompt templates, curriculum order, reuse subsets, a resumable stream.

    problems = load_problems("gsm8k", split="train")
    prompt = render_prompt(problems[0], chat_template=my_apply_chat_template)
    stream = PromptStream(curriculum_order(problems), prompts_per_step=512)

Modules: `problem` (the `Problem` record), `loaders` (named sets under the data root), `tables`
(parquet / JSONL tables: plain, verl, Hugging Face layouts; `fields` reads their nested fields,
`prompt_wrapper` strips a prompt's instructions), `prompts.yaml` + `prompt_templates` (prompt text),
`curriculum` (order, the study's held-out split, reuse subsets), `prompt_stream` (batches with a
checkpointable position), `synthetic` (arithmetic task for offline runs). Formats and config keys:
docs/data.md.
"""

from rl_scaling.data.curriculum import (
    curriculum_order,
    easy_hard_halves,
    heldout_split,
    reuse_subset,
    stratified_sample,
    study_split,
)
from rl_scaling.data.loaders import DATASETS, default_data_root, load_problems, problems_file
from rl_scaling.data.problem import Problem
from rl_scaling.data.prompt_stream import PromptStream, problems_fingerprint
from rl_scaling.data.prompt_templates import load_prompt_templates, prompt_messages, render_prompt
from rl_scaling.data.prompt_wrapper import strip_wrapper
from rl_scaling.data.tables import TableOptions, load_table
from rl_scaling.data.synthetic import LEVELS, synthetic_arithmetic

__all__ = [
    "DATASETS",
    "LEVELS",
    "Problem",
    "PromptStream",
    "TableOptions",
    "curriculum_order",
    "default_data_root",
    "easy_hard_halves",
    "heldout_split",
    "load_problems",
    "load_prompt_templates",
    "load_table",
    "problems_file",
    "problems_fingerprint",
    "prompt_messages",
    "render_prompt",
    "reuse_subset",
    "stratified_sample",
    "strip_wrapper",
    "study_split",
    "synthetic_arithmetic",
]
