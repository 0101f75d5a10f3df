"""Serve a model as an OpenAI-compatible endpoint: requests join the running batch as they arrive.

    python tools/serve.py --model smollm2-135m-instruct                     # http://127.0.0.1:8000/v1
    python tools/serve.py --model runs/demo/checkpoints/step_00000012 --api-key KEY --port 8080
    QRR_API_KEY=KEY python tools/serve.py --model DIR --host 0.0.0.0        # the key kept out of `ps`

POST /v1/chat/completions and /v1/completions (stream, n, stop, max_tokens, seed, temperature, top_p, top_k as
an extra body field, logprobs / top_logprobs up to 20), GET /v1/models[/{id}]. Clients: any OpenAI client with
base_url=http://HOST:PORT/v1 (and api_key=KEY when the server has one). `common/serving/` holds the server.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

API_KEY_ENV = "QRR_API_KEY"


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """The engine's settings (shared with tools/psysafe_server.py)."""
    p.add_argument("--max-slots", type=int, default=64, help="sequences decoded at once")
    p.add_argument("--page-size", type=int, default=16, help="tokens a KV-cache page")
    p.add_argument("--kv-cache-gib", type=float, default=None,
                   help="the page pool's memory (default: the engine's, from the device)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="most tokens a sequence holds (default: the model's)")
    p.add_argument("--decode-steps", type=int, default=None,
                   help="decode steps a host round trip (default: 1 on a CPU, 4 on an accelerator; same tokens)")
    p.add_argument("--chat-template", default=None,
                   help="a bundled chat template's name (common/chat_templates/); default: the tokenizer's")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint path or known model name")
    p.add_argument("--served-model-name", default=None, help="the model id clients name (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_ENV}); never logged")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="compute dtype (default: bfloat16 on GPU / TPU, float32 on CPU)")
    p.add_argument("--attention", default="auto", help="attention backend (common.attention)")
    add_engine_args(p)
    return p.parse_args(argv)


def model_server(model, tokenizer, model_id: str, args):
    """A started `common.serving.ModelServer` with the engine settings of `add_engine_args`."""
    from common.serving import ModelServer

    memory = int(args.kv_cache_gib * 2**30) if args.kv_cache_gib else None
    return ModelServer(model, tokenizer, model_id, chat_template=args.chat_template, max_slots=args.max_slots,
                       page_size=args.page_size, memory_bytes=memory, max_model_len=args.max_model_len,
                       decode_steps=args.decode_steps).start()


def main(argv=None) -> int:
    args = parse_args(argv)
    import uvicorn

    from common.api import load_for_command
    from common.serving import make_app

    model, tokenizer, seconds = load_for_command(args.model, dtype=args.dtype, attention=args.attention)
    t = time.perf_counter()
    server = model_server(model, tokenizer, args.served_model_name or args.model, args)
    seconds += time.perf_counter() - t  # the time until the server is ready
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    engine = server.engine
    print(f"[loaded {args.model} in {seconds:.1f}s; serving {server.model_id!r} at "
          f"http://{args.host}:{args.port}/v1; {engine.max_slots} slots, {engine.num_pages - 1} pages of "
          f"{engine.page_size} tokens, context {server.context_limit}; API key {'required' if api_key else 'off'}]",
          file=sys.stderr)
    uvicorn.run(make_app(server, api_key=api_key), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
