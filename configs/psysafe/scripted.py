"""PsySafe with the canned demo policy (no model): a fast end-to-end check of the whole pipeline.

python tools/psysafe.py --config=configs/psysafe/scripted.py --workdir=/tmp/psysafe_scripted

The demo policy's numbers only show the machinery working (see agent_safety/demo_policy.py).
"""

from agent_safety.run_config import default_config


def get_config():
    c = default_config()
    c.backend.kind = "scripted"
    c.backend.policy = "demo"
    c.tasks.source = "builtin"
    c.tasks.limit_per_kind = 3
    c.systems = ("camel", "autogen", "metagpt", "autogpt")
    c.attacks = ("none", "HI", "HI-Traits", "HI-Traits-hf", "jailbreak")
    c.defences = ("none", "doctor", "police")
    c.batch_size = 64
    return c
