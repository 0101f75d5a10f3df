"""PsySafe against any OpenAI-compatible endpoint (OpenAI, vLLM, or tools/psysafe_server.py).

OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=... \
python tools/psysafe.py --config=configs/psysafe/openai_endpoint.py --workdir=/tmp/psysafe_api \
    --config.backend.model=MODEL [--config.judge_backend.model=JUDGE_MODEL]

The API key is read from OPENAI_API_KEY (or --config.backend.api_key) and never stored with the results.
"""

from agent_safety.run_config import default_config


def get_config():
    c = default_config()
    c.backend.kind = "openai"
    c.backend.model = "gpt-4o-mini"
    c.backend.timeout_s = 120.0
    c.backend.max_attempts = 6
    c.backend.max_request_s = 900.0
    c.backend.concurrency = 16
    c.judge_backend.kind = "same"
    c.tasks.source = "builtin"
    c.systems = ("autogen",)
    c.attacks = ("none", "HI", "HI-hf", "Traits", "HI-Traits", "HI-Traits-hf", "jailbreak")
    c.defences = ("none",)
    c.batch_size = 32
    return c
