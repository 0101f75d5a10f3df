"""The small public facade: `load_pretrained` and `generate`.

    from common import load_pretrained, generate
    model, tokenizer = load_pretrained(path, dtype="float32", mesh=None)
    logits = model(input_ids)                       # int32 [B, T] -> float32 [B, T, V]
    outs = generate(model, tokenizer, ["What is 7 + 5?"], max_new_tokens=32)
    outs[0].token_ids, outs[0].text, outs[0].logprobs
"""

from __future__ import annotations

import dataclasses
import weakref
from pathlib import Path
from typing import Sequence

import jax
from jax.sharding import Mesh

from common.engine import Engine
from common.model import Decoder
from common.rollout import Rollout, pick_rollout_engine
from common.sampler import Sampler

# Names that resolve to a checkpoint this repository can build offline.
KNOWN_MODELS = ("smollm2-135m-instruct",)

_SAMPLERS: "weakref.WeakKeyDictionary[Decoder, Sampler]" = weakref.WeakKeyDictionary()
_ENGINES: "weakref.WeakKeyDictionary[Decoder, Engine]" = weakref.WeakKeyDictionary()
_MESHES: "weakref.WeakKeyDictionary[Decoder, Mesh]" = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class Completion:
    """One generated continuation (the generated part only; a stop token, if hit, is its last token)."""

    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"
    prompt_token_ids: list[int]


def resolve_model_path(path: str | Path) -> Path:
    """The absolute path of a checkpoint (a path relative to the working directory, or a known model name):
    resolved once here, as orbax refuses relative paths and a path kept relative changes meaning with the
    working directory."""
    if str(path).lower() in KNOWN_MODELS:
        from common.checkpoint.gguf import ensure_smollm2
        return Path(ensure_smollm2()).absolute()
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path} (nor a known model name: {KNOWN_MODELS})")
    return path


def load_pretrained(path: str | Path, dtype: str | None = None, mesh: Mesh | None = None,
                    param_dtype: str | None = None, attention: str = "auto"):
    """(model, tokenizer) from an HF directory, a GGUF file, one of our orbax checkpoints, or a known
    model name ("smollm2-135m-instruct"). `dtype` is the compute dtype (default: the platform's,
    `common.platform_flags.default_compute_dtype`: bfloat16 on GPU / TPU, float32 on CPU); parameters are
    stored in `param_dtype` (default: `dtype`). `mesh`: a Mesh with axes data/fsdp/tensor; each parameter is placed
    with its sharding as it is read. `attention`: the attention backend (`common.attention.select_backend`:
    "auto" picks the best installed one for this platform and mesh; "xla" the reference)."""
    from common.attention import select_backend
    from common.checkpoint.hf_import import load_hf_decoder
    from common.checkpoint.orbax_io import is_checkpoint_dir, load_checkpoint
    from common.config import ModelConfig
    from common.platform_flags import default_compute_dtype
    from common.tokenizer import load_tokenizer, qwen2_tokenizer

    dtype = dtype or default_compute_dtype()
    path = resolve_model_path(path)
    if path.is_file():
        from common.checkpoint.gguf import convert_gguf_to_hf
        hf_dir = path.with_name(path.stem + "-hf")
        if not (hf_dir / "config.json").exists():
            convert_gguf_to_hf(path, hf_dir)
        path = hf_dir
    if is_checkpoint_dir(path):
        model = load_checkpoint(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh)
        if (path / "tokenizer").exists():
            tokenizer = load_tokenizer(path / "tokenizer")
        elif model.config.model_type == "qwen2":
            tokenizer = qwen2_tokenizer()
        else:
            raise FileNotFoundError(f"checkpoint {path} has no tokenizer/ and is not a Qwen2 model")
    else:
        model = load_hf_decoder(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                                config=ModelConfig.from_hf_json(path))
        tokenizer = load_tokenizer(path)
    from common.vocab import fit_tokenizer
    tokenizer = fit_tokenizer(tokenizer, model.config.vocab_size, path)  # no id beyond the embedding
    model.use_backend(select_backend(attention, mesh=mesh))
    if mesh is not None:
        _MESHES[model] = mesh
    return model, tokenizer


def load_for_command(path: str | Path, dtype: str | None = None, attention: str = "auto"):
    """(model, tokenizer, seconds the load took): what a command in tools/ that runs one model does first —
    the platform's XLA defaults (`common.platform_flags.apply_platform_defaults`: before a JAX backend
    starts, which importing this module does not do), the persistent compilation cache
    (`common.compile_cache`), then `load_pretrained(path, dtype=dtype, attention=attention)`."""
    import time

    from common.compile_cache import enable_compilation_cache
    from common.platform_flags import apply_platform_defaults

    apply_platform_defaults()
    enable_compilation_cache()
    t = time.perf_counter()
    model, tokenizer = load_pretrained(path, dtype=dtype, attention=attention)
    return model, tokenizer, time.perf_counter() - t


def _cached(cache: weakref.WeakKeyDictionary, kind, model: Decoder, max_cache_length: int | None, pad_id: int):
    """The model's generator of `kind` held in `cache` (its compiled programs persist across calls), synced to
    the model's current parameter values; a new one when the cache length asked for differs."""
    held = cache.get(model)
    if held is None or (max_cache_length and held.max_cache_length != max_cache_length):
        held = cache[model] = kind(model, mesh=_MESHES.get(model), max_cache_length=max_cache_length, pad_id=pad_id)
    else:
        held.update_params(model)
    return held


def sampler_for(model: Decoder, max_cache_length: int | None = None, pad_id: int = 0) -> Sampler:
    """The cached static Sampler of a model."""
    return _cached(_SAMPLERS, Sampler, model, max_cache_length, pad_id)


def engine_for(model: Decoder, max_cache_length: int | None = None, pad_id: int = 0) -> Engine:
    """The cached paged engine of a model (its page pool persists too)."""
    return _cached(_ENGINES, Engine, model, max_cache_length, pad_id)


def rollout_for(model: Decoder, engine: str = "auto", max_cache_length: int | None = None, pad_id: int = 0
                ) -> Rollout:
    """What generates for `model`: "paged" the engine (`common.engine`), "static" the sampler, "auto" as
    `common.rollout.pick_rollout_engine` decides for the model's platform (the sampler on CPU, the engine
    elsewhere)."""
    mesh = _MESHES.get(model)
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    if pick_rollout_engine(engine, platform) == "paged":
        return engine_for(model, max_cache_length, pad_id)
    return sampler_for(model, max_cache_length, pad_id)


def generate(model: Decoder, tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 32,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
             stop_token_ids: Sequence[int] | None = None, max_cache_length: int | None = None,
             engine: str = "auto") -> list[Completion]:
    """Samples a continuation of each prompt (`rollout_for(model, engine)` generates: the same samples either
    way for the same seed, as both key token i of prompt r by (seed, r, i)).

    prompts: strings (encoded as-is: no chat template, no added special tokens) or token-id lists.
    stop_token_ids: None = the tokenizer's end ids; [] = never stop early.
    logprobs: of each sampled token under softmax(logits / temperature) (temperature 1 when greedy).
    """
    from common.tokenizer import end_token_ids

    prompts = list(prompts)
    if prompts and isinstance(prompts[0], str):
        prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    else:
        prompt_ids = [list(map(int, p)) for p in prompts]
    stops = end_token_ids(tokenizer) if stop_token_ids is None else list(stop_token_ids)
    pad_id = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
    out = rollout_for(model, engine, max_cache_length, pad_id).sample(
        prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        stop_token_ids=stops)
    return [
        Completion(token_ids=ids, text=tokenizer.decode(ids, skip_special_tokens=True), logprobs=lps,
                   finish_reason=reason, prompt_token_ids=p)
        for ids, lps, reason, p in zip(out.token_ids, out.logprobs, out.finish_reasons, prompt_ids)
    ]
