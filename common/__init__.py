"""The shared core: Qwen2/Qwen2.5 (and Llama-architecture) decoder, checkpoints, tokenizer, sharding,
sampler. Public facade: `load_pretrained`, `generate` (see common/api.py). Imported lazily so that
`import common.<light module>` does not pull in JAX."""

__all__ = ["load_pretrained", "generate", "Completion"]


def __getattr__(name):
    if name in __all__:
        from common import api
        return getattr(api, name)
    raise AttributeError(f"module 'common' has no attribute {name!r}")
