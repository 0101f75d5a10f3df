"""Generate from, or chat with, any checkpoint this repository reads (HF directory, GGUF file, our orbax
checkpoint, or a known name such as smollm2-135m-instruct).

    python tools/generate.py --model smollm2-135m-instruct --prompt "The capital of France is"
    python tools/generate.py --model smollm2-135m-instruct --chat "What is 7 + 5?"
    python tools/generate.py --model runs/demo/checkpoints/step_00000012 --chat      # interactive chat
    python tools/generate.py --model DIR --prompt "a" --prompt "b" --temperature 0.7 --top-p 0.9 --n 2
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint path or known model name")
    p.add_argument("--prompt", action="append", default=[], help="raw prompt (repeatable; no chat template)")
    p.add_argument("--chat", nargs="?", const="", default=None,
                   help="a user message to answer with the chat template; without a value: interactive")
    p.add_argument("--system", default=None, help="system message for --chat")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="compute dtype (default: bfloat16 on GPU / TPU, float32 on CPU)")
    p.add_argument("--attention", default="auto", help="attention backend (common.attention): auto, xla, cpu, ...")
    p.add_argument("--engine", default="auto", choices=["auto", "paged", "static"],
                   help="what generates: the paged engine, the static sampler, auto = paged on GPU/TPU, static on CPU")
    p.add_argument("--logprobs", action="store_true", help="print each generated token's log-probability")
    args = p.parse_args(argv)
    if not args.prompt and args.chat is None:
        p.error("give --prompt TEXT (repeatable) or --chat [MESSAGE]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.api import generate, load_for_command
    from common.chat import render_chat

    model, tokenizer, seconds = load_for_command(args.model, dtype=args.dtype, attention=args.attention)
    print(f"[loaded {args.model} in {seconds:.1f}s]", file=sys.stderr)
    sample = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                  top_p=args.top_p)

    def run(prompts):
        prompts = [p for p in prompts for _ in range(args.n)]
        t = time.perf_counter()
        outs = generate(model, tokenizer, prompts, seed=args.seed, engine=args.engine, **sample)
        dt = time.perf_counter() - t
        n_tokens = sum(len(o.token_ids) for o in outs)
        print(f"[{n_tokens} tokens in {dt:.1f}s]", file=sys.stderr)
        return outs

    if args.prompt:
        for i, out in enumerate(run(args.prompt)):
            print(f"--- {i}: {out.finish_reason}\n{args.prompt[i // args.n]}{out.text}")
            if args.logprobs:
                print(" ".join(f"{tokenizer.decode([t])!r}:{lp:.3f}" for t, lp in zip(out.token_ids, out.logprobs)))
        return 0

    messages = [{"role": "system", "content": args.system}] if args.system else []
    pending = [args.chat] if args.chat else []
    while True:
        if not pending:
            try:
                line = input("you> ")
            except EOFError:
                return 0
            if line.strip() in ("/exit", "/quit"):
                return 0
            pending = [line]
        messages.append({"role": "user", "content": pending.pop()})
        out = run([render_chat(tokenizer, messages)])[0]
        print(f"assistant> {out.text}")
        messages.append({"role": "assistant", "content": out.text})
        if args.chat:  # one-shot mode
            return 0


if __name__ == "__main__":
    sys.exit(main())
