"""The steps of tools/device_check.py: each `step(shapes, report) -> dict` runs in its own process and returns
what its results file holds; `report(partial)` saves what it has so far (a step stopped at its time limit keeps
it). Models are random (seed 0) at the named sizes' shapes: nothing is downloaded, and
transformers gets the same weights through an HF directory written by `common.checkpoint.hf_export`.

* parity: logits (float32, matmuls at highest precision on both sides) and greedy tokens against transformers,
  on a Qwen2 and a Llama (SmolLM2-shaped) config; bfloat16 logits' difference beside them;
* decode: tokens/s of our sampler and of transformers' `generate` at each batch, greedy, no early stop; at
  batch 1 the share of the card's HBM bandwidth our decode reads weights at (bytes of bfloat16 weights read
  per step, `rl_scaling.time_plan.rollout_weight_bytes`, x steps/s, over the datasheet's bandwidth); the
  rollout engine at `engine_batch` with 1 and `DEFAULT_DECODE_STEPS` decode steps a host round trip
  (`tools/bench_decode_calls.py`: the host's share of a step);
* update: the GRPO update (`make_update_fn`, the trainer's) at the recipe's lengths with the 1xh100 layout's
  micro-batch and remat: seconds, MFU against the datasheet's dense bf16 peak, peak device memory;
* attention: the backends (xla, blockwise, cudnn) on one causal bfloat16 call: max difference from the
  float32 reference, forward and forward + backward time.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time

import numpy as np

from bench_decode_calls import timed as timed_engine  # beside this script
from bench_sampler import bench_hf, bench_ours


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What each step runs. `tiny`: model sizes shrunk to a few hundred KB (the CPU dry run)."""

    tiny: bool = False
    parity_layers: int = 4
    parity_prompt: int = 64
    parity_new_tokens: int = 16
    decode_size: str = "qwen2_5_0_5b"
    decode_batches: tuple[int, ...] = (1, 32, 256)
    decode_prompt: int = 128
    decode_new_tokens: int = 128
    engine_batch: int = 32
    update_size: str = "qwen2_5_0_5b"
    update_preset: str = "1xh100"
    prompt_len: int = 2048  # the recipe's (configs/grpo/base.py)
    response_len: int = 4096
    micro_batches: int = 16  # of the recipe's 1024 per mini-batch: seconds scale with the count
    attention: tuple[int, int, int, int, int] = (4, 4096, 14, 2, 64)  # B, T, H, K, h (0.5B's heads)
    repeats: int = 2


GPU = Shapes()
DRY = Shapes(tiny=True, parity_layers=2, parity_prompt=8, parity_new_tokens=4, decode_batches=(1,),
             decode_prompt=8, decode_new_tokens=4, engine_batch=4, prompt_len=16, response_len=16, micro_batches=2,
             attention=(2, 64, 4, 2, 16), repeats=1)

# NVIDIA datasheets (rl_scaling.time_plan.CHIPS holds the same figures): device_kind -> chip name there.
CHIP_NAMES = {"H100": "h100", "H200": "h200"}


class IdsOnly:
    """The tokenizer `common.generate` needs for token-id prompts: a pad id, and decoding to nothing."""

    pad_token_id = 0

    def decode(self, ids, **kwargs) -> str:
        return ""


def model_config(size: str, shapes: Shapes, layers: int | None = None):
    """The preset `size`, shrunk to tiny widths for a dry run (its architecture kept), with `layers` layers."""
    from common.config import get_preset

    cfg = get_preset(size)
    if shapes.tiny:
        cfg = cfg.replace(vocab_size=512, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
                          head_dim=16, num_layers=2)
    return cfg.replace(num_layers=layers) if layers else cfg


def random_decoder(cfg, dtype: str, param_dtype: str | None = None):
    from flax import nnx

    from common.attention import select_backend
    from common.model import Decoder

    return Decoder(cfg, dtype=dtype, param_dtype=param_dtype or dtype, rngs=nnx.Rngs(0),
                   attention=select_backend("auto"))


def device_info() -> dict:
    """The device JAX runs on, its chip's datasheet figures (None off the known GPUs) and the versions."""
    import jax

    from rl_scaling.time_plan import CHIPS

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    chip = next((CHIPS[name] for key, name in CHIP_NAMES.items() if key in kind), None)
    return {"platform": device.platform, "device_kind": kind, "jax": jax.__version__,
            "peak_bf16_flops": chip.peak_flops if chip else None,
            "hbm_bandwidth": chip.hbm_bandwidth if chip else None}


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def hf_model(directory, dtype: str):
    """transformers' model of an HF directory in `dtype`, on torch's device."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype).to(torch_device()).eval()


def hf_copy(model, directory, dtype: str):
    """transformers' model of the same weights (written through hf_export), on torch's device."""
    from common.checkpoint.hf_export import save_hf

    save_hf(model, directory, dtype=dtype)
    return hf_model(directory, dtype)


def bfloat16_pair(directory):
    """(ours, transformers') of an HF directory, both computing in bfloat16 with bfloat16 weights."""
    from common.attention import select_backend
    from common.checkpoint.hf_import import load_hf_decoder

    ours = load_hf_decoder(directory, dtype="bfloat16")
    ours.use_backend(select_backend("auto"))
    return ours, hf_model(directory, "bfloat16")


def hf_logits(hf_model, ids: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return hf_model(torch.tensor(ids, device=hf_model.device)).logits.float().cpu().numpy()


def hf_greedy(hf_model, ids: np.ndarray, new_tokens: int) -> np.ndarray:
    import torch

    x = torch.tensor(ids, device=hf_model.device)
    with torch.no_grad():
        out = hf_model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[:, ids.shape[1]:].cpu().numpy()


def our_greedy(model, ids: np.ndarray, new_tokens: int) -> np.ndarray:
    from common.api import sampler_for

    out = sampler_for(model).sample(ids.tolist(), max_new_tokens=new_tokens, temperature=0.0, stop_token_ids=[])
    return np.asarray(out.token_ids)


def parity(shapes: Shapes, report=lambda partial: None) -> dict:
    import jax
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    rows = {}
    for name, size in (("qwen2", "qwen2_5_0_5b"), ("smollm2", "smollm2_135m")):
        cfg = model_config(size, shapes, layers=shapes.parity_layers)
        ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, shapes.parity_prompt))
        with tempfile.TemporaryDirectory() as d, jax.default_matmul_precision("highest"):
            ours = random_decoder(cfg, "float32")
            theirs = hf_copy(ours, d, "float32")
            a, b = np.asarray(ours(ids)), hf_logits(theirs, ids)
            greedy_ours, greedy_theirs = our_greedy(ours, ids, shapes.parity_new_tokens), \
                hf_greedy(theirs, ids, shapes.parity_new_tokens)
            del theirs
            ours16, theirs16 = bfloat16_pair(d)
            a16, b16 = np.asarray(ours16(ids), np.float32), hf_logits(theirs16, ids)
        same = greedy_ours == greedy_theirs
        rows[name] = {"config": f"{size}, {cfg.num_layers} layers, random weights", "backend": ours.backend.name,
                      "logits_max_abs_diff": float(np.abs(a - b).max()),
                      "logits_rel_err": float(np.abs(a - b).max() / np.abs(b).max()),
                      "greedy_tokens_equal": int(same.sum()), "greedy_tokens": int(same.size),
                      "greedy_first_mismatch": [int(np.argmin(r)) if not r.all() else None for r in same],
                      "bf16_logits_max_abs_diff": float(np.abs(a16 - b16).max()),
                      "bf16_logits_rel_err": float(np.abs(a16 - b16).max() / np.abs(b16).max())}
        report({"models": rows})
    return {"models": rows, "torch_device": str(torch_device())}


def decode(shapes: Shapes, report=lambda partial: None) -> dict:
    import jax

    from rl_scaling.time_plan import rollout_weight_bytes

    info = device_info()
    cfg = model_config(shapes.decode_size, shapes)
    model = random_decoder(cfg, "bfloat16")
    rows, on_gpu_only = [], info["platform"] == "gpu" and torch_device().type == "cpu"
    with tempfile.TemporaryDirectory() as d:
        theirs = None if on_gpu_only else hf_copy(model, d, "bfloat16")
        for batch in shapes.decode_batches:
            prompts = np.random.default_rng(batch).integers(0, cfg.vocab_size, (batch, shapes.decode_prompt)).tolist()
            ours, compile_s = bench_ours(model, IdsOnly(), prompts, shapes.decode_new_tokens, shapes.repeats)
            hf = bench_hf(theirs, prompts, shapes.decode_new_tokens, shapes.repeats, 0) if theirs else None
            rows.append({"batch": batch, "ours_tokens_per_s": ours, "transformers_tokens_per_s": hf,
                         "ratio": ours / hf if hf else None, "compile_s": compile_s})
            report({"rows": rows})
    engine_rows = engine_calls(model, cfg, shapes, lambda engine_rows: report({"rows": rows,
                                                                               "engine_rows": engine_rows}))
    weight_bytes = rollout_weight_bytes(cfg, 1)
    steps_per_s = rows[0]["ours_tokens_per_s"] / rows[0]["batch"]
    share = steps_per_s * weight_bytes / info["hbm_bandwidth"] if info["hbm_bandwidth"] else None
    return {"model": f"{shapes.decode_size}, random weights, bfloat16", "backend": model.backend.name,
            "prompt_tokens": shapes.decode_prompt, "new_tokens": shapes.decode_new_tokens, "rows": rows,
            "weight_bytes_per_step": weight_bytes, "batch1_weight_bytes_per_s": steps_per_s * weight_bytes,
            "batch1_hbm_share": share, "transformers": None if on_gpu_only else str(torch_device()),
            "jax_devices": len(jax.devices()), "engine_rows": engine_rows}


def engine_calls(model, cfg, shapes: Shapes, report) -> list[dict]:
    """The rollout engine's tokens/s at `engine_batch` with one decode step a host round trip and with the
    accelerator default (`common.engine.engine.DEFAULT_DECODE_STEPS`); the tokens must not change."""
    from common.engine import Engine
    from common.engine.engine import DEFAULT_DECODE_STEPS

    shape = (shapes.engine_batch, shapes.decode_prompt)
    prompts = np.random.default_rng(7).integers(0, cfg.vocab_size, shape).tolist()
    rows, tokens = [], None
    for k in (1, DEFAULT_DECODE_STEPS):
        engine = Engine(model, max_slots=shapes.engine_batch, decode_steps=k,
                        max_cache_length=shapes.decode_prompt + shapes.decode_new_tokens)
        seconds, out, calls = timed_engine(engine, prompts, shapes.decode_new_tokens, shapes.repeats)
        rows.append({"batch": shapes.engine_batch, "decode_steps": k, "round_trips": calls,
                     "tokens_per_s": shapes.engine_batch * shapes.decode_new_tokens / seconds,
                     "tokens_equal": tokens is None or out.token_ids == tokens})
        tokens = out.token_ids
        report(rows)
    return rows


def update_flops(cfg, seq_len: int, response_len: int) -> int:
    """Model FLOPs of one sequence's update (forward + backward, remat's recompute not counted): 6 N T for the
    decoder stack, causal attention 3 x 4 L H h T(T+1)/2, the LM head 3 x 2 V d over the response positions."""
    from rl_scaling.accounting import causal_context_tokens, non_embedding_params

    T = seq_len - 1  # the update's forward runs on tokens[:, :-1]
    return (6 * non_embedding_params(cfg) * T
            + 3 * 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * causal_context_tokens([T])
            + 3 * 2 * cfg.vocab_size * cfg.hidden_size * response_len)


def update_batch(M: int, m: int, P: int, R: int, vocab: int) -> dict:
    rng = np.random.default_rng(0)
    seq = lambda *s: rng.normal(size=(M, m, *s)).astype(np.float32)  # noqa: E731
    return {"tokens": rng.integers(0, vocab, (M, m, P + R), dtype=np.int32), "start": np.zeros((M, m), np.int32),
            "targets": rng.integers(0, vocab, (M, m, R), dtype=np.int32), "mask": np.ones((M, m, R), np.float32),
            "advantages": seq(), "old_logp": -np.abs(seq(R)), "ref_logp": -np.abs(seq(R))}


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def update(shapes: Shapes, report=lambda partial: None) -> dict:
    import jax
    from flax import nnx

    from common.mesh_presets import layout
    from rl_scaling.grpo.train_step import LossConfig, make_optimizer, make_update_fn

    info = device_info()
    cfg = model_config(shapes.update_size, shapes)
    plan = layout(shapes.update_preset, shapes.update_size)
    m, M, P, R = plan.per_device_micro_batch, shapes.micro_batches, shapes.prompt_len, shapes.response_len
    graphdef, params = nnx.split(random_decoder(cfg, "bfloat16", "float32"))
    optimizer = make_optimizer(1e-6, 0.1, 1.0)
    state = {"params": params, "opt": optimizer.init(params)}
    update_fn = make_update_fn(graphdef, optimizer, LossConfig(max_response_len=R), plan.remat)
    batch = jax.device_put(update_batch(M, m, P, R, cfg.vocab_size))

    def step():
        state["params"], state["opt"], metrics = update_fn(state["params"], state["opt"], batch)
        jax.block_until_ready(metrics)

    first = timed(step, 1)[0]
    seconds = statistics.median(timed(step, shapes.repeats))
    flops = update_flops(cfg, P + R, R) * M * m
    stats = jax.devices()[0].memory_stats() or {}
    return {"model": f"{shapes.update_size}, random weights, bfloat16 compute, float32 parameters, AdamW",
            "preset": shapes.update_preset, "micro_batch": m, "remat": plan.remat, "micro_batches": M,
            "prompt_len": P, "response_len": R, "first_call_s": first, "update_s": seconds,
            "seconds_per_micro_batch": seconds / M, "tokens_per_s": M * m * (P + R) / seconds,
            "model_flops": flops, "mfu": flops / seconds / info["peak_bf16_flops"] if info["peak_bf16_flops"] else None,
            "peak_bytes_in_use": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit")}


def attention(shapes: Shapes, report=lambda partial: None) -> dict:
    import jax
    import jax.numpy as jnp

    from common.attention import CudnnAttention, Visibility, select_backend

    B, T, H, K, h = shapes.attention
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (B, T, H, h), jnp.bfloat16)
    k, v = (jax.random.normal(key, (B, T, K, h), jnp.bfloat16) for key in keys[1:3])
    cot = jax.random.normal(keys[3], (B, T, H, h), jnp.float32)
    vis = Visibility(query_slots=jnp.arange(T, dtype=jnp.int32), start=jnp.zeros((B,), jnp.int32), prefix=None,
                     key_length=T)
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    ref = jax.jit(select_backend("xla").attend)(f32(q), f32(k), f32(v), vis)
    on_gpu = jax.devices()[0].platform == "gpu"
    rows = {}
    for name in ("xla", "blockwise", "cudnn"):
        backend = select_backend(name) if on_gpu or name != "cudnn" else CudnnAttention(implementation="xla")
        forward = jax.jit(backend.attend)
        grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(f32(backend.attend(q, k, v, vis)) * cot), argnums=(0, 1, 2)))
        out = forward(q, k, v, vis)
        jax.block_until_ready(grad(q, k, v))
        rows[name] = {"backend": repr(backend), "max_abs_diff_vs_f32": float(jnp.abs(f32(out) - ref).max()),
                      "forward_ms": 1e3 * statistics.median(
                          timed(lambda: jax.block_until_ready(forward(q, k, v, vis)), shapes.repeats + 2)),
                      "forward_backward_ms": 1e3 * statistics.median(
                          timed(lambda: jax.block_until_ready(grad(q, k, v)), shapes.repeats + 2))}
        report({"backends": rows})
    return {"shape": {"batch": B, "tokens": T, "heads": H, "kv_heads": K, "head_dim": h}, "dtype": "bfloat16",
            "causal": True, "backends": rows, "auto": select_backend("auto").name}


STEPS = {"parity": parity, "decode": decode, "update": update, "attention": attention}
