"""PsySafe on a local model through the in-process JAX sampler (`common.generate`).

python tools/psysafe.py --config=configs/psysafe/smollm2_demo.py --workdir=/tmp/psysafe_smollm2 \
    --config.model_path=/path/to/SmolLM2-135M-Instruct   # HF dir, GGUF file or orbax checkpoint dir

A 135M model is a weak judge and rarely fills in the questionnaire correctly (expect many invalid
answers); the run shows the machinery, not the paper's numbers. Point judge_backend at a stronger
model (e.g. --config.judge_backend.kind=openai ...) for meaningful labels.
"""

from agent_safety.run_config import default_config


def get_config():
    c = default_config()
    c.model_path = ""  # required on the command line; copied into backend.model_path
    c.backend.kind = "jax"
    c.backend.dtype = "float32"
    c.backend.max_batch = 32
    c.judge_backend.kind = "same"
    c.tasks.source = "builtin"
    c.tasks.limit_per_kind = 4
    c.systems = ("autogen",)
    c.attacks = ("none", "HI-Traits")
    c.defences = ("none",)
    c.rounds = 2
    c.agent_sampling.max_tokens = 96
    c.questionnaire_sampling.max_tokens = 192
    c.judge_sampling.max_tokens = 48
    c.batch_size = 16
    c.backend.model_path = c.get_ref("model_path")
    return c
