"""Serve a PsySafe chat backend as an OpenAI-compatible endpoint (/v1/chat/completions, /v1/models).

    python tools/psysafe_server.py --backend=jax --model-path=/path/to/SmolLM2-135M-Instruct --port=8000
    python tools/psysafe_server.py --backend=scripted --port=8000          # canned demo replies, no model

--backend=jax serves the model through `common.serving` (as tools/serve.py: requests join the running batch
as they arrive, up to --max-batch sequences at once; streaming, n, stop strings, log-probabilities).
--backend=scripted / openai: `agent_safety.server`, a proxy over the backend that batches concurrent requests
(up to --max-batch, waiting --batch-window-s for company). Clients: any OpenAI client with
base_url=http://HOST:PORT/v1, e.g. configs/psysafe/openai_endpoint.py.
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from serve import API_KEY_ENV, add_engine_args, model_server  # tools/serve.py, beside this script


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("scripted", "jax", "openai"), default="jax")
    parser.add_argument("--model-path", default="", help="jax: HF dir, GGUF file, orbax checkpoint dir or known name")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--upstream-model", default="", help="openai: model name at the upstream endpoint")
    parser.add_argument("--model-name", default="psysafe", help="model id this server reports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=32, help="most requests (jax: sequences) decoded together")
    parser.add_argument("--batch-window-s", type=float, default=0.01,
                        help="scripted / openai: wait for more requests this long (jax: requests join at once)")
    parser.add_argument("--api-key", default=None, help="jax: require 'Authorization: Bearer KEY'")
    parser.add_argument("--chat-template", default=None, help="jax: a bundled chat template's name")
    args = parser.parse_args(argv)
    if args.backend == "jax":
        from common.api import load_for_command
        from common.serving import make_app
        model, tokenizer, _ = load_for_command(args.model_path, dtype=args.dtype)
        engine_parser = argparse.ArgumentParser()
        add_engine_args(engine_parser)  # the engine's defaults as tools/serve.py has them
        engine_args = engine_parser.parse_args([])
        engine_args.max_slots, engine_args.chat_template = args.max_batch, args.chat_template
        server = model_server(model, tokenizer, args.model_name, engine_args)
        app = make_app(server, api_key=args.api_key or os.environ.get(API_KEY_ENV) or None)
    else:
        from agent_safety.backends import make_backend
        from agent_safety.run_config import backend_config
        from agent_safety.server import make_app
        cfg = backend_config(args.backend)
        cfg.update(dict(model_path=args.model_path, dtype=args.dtype, model=args.upstream_model,
                        max_batch=args.max_batch))
        app = make_app(make_backend(cfg), model_name=args.model_name, max_batch=args.max_batch,
                       batch_window_s=args.batch_window_s)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
