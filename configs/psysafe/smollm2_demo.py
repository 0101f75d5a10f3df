"""PsySafe on a local model through the in-process JAX sampler (`common.generate`).

python tools/psysafe.py --config=configs/psysafe/smollm2_demo.py --workdir=/tmp/psysafe_smollm2

The model defaults to the offline SmolLM2-135M-Instruct by name (built from the GGUF this repository
ships, as the GRPO demo does); --config.model_path=PATH takes an HF dir, GGUF file or orbax checkpoint dir.
A 135M model fills in no questionnaire validly and is no judge (expect invalid answers and verdicts and the
report's warning): the run checks the machinery, not the paper's numbers. For those, point the agents and
the judge at an endpoint (configs/psysafe/openai_endpoint.py, or --config.judge_backend.kind=openai ...).
"""

from agent_safety.run_config import default_config


def get_config():
    c = default_config()
    c.model_path = "smollm2-135m-instruct"  # a known offline model name, or a path; copied into backend.model_path
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
