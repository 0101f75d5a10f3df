"""Serve a PsySafe chat backend as an OpenAI-compatible endpoint (/v1/chat/completions, /v1/models).

    python tools/psysafe_server.py --backend=jax --model-path=/path/to/SmolLM2-135M-Instruct --port=8000
    python tools/psysafe_server.py --backend=scripted --port=8000          # canned demo replies, no model

Concurrent requests are decoded together (up to --max-batch). Clients: any OpenAI client with
base_url=http://HOST:PORT/v1, e.g. configs/psysafe/openai_endpoint.py.
"""

from __future__ import annotations

import argparse

import uvicorn

from agent_safety.backends import make_backend
from agent_safety.run_config import backend_config
from agent_safety.server import make_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("scripted", "jax", "openai"), default="jax")
    parser.add_argument("--model-path", default="", help="jax: HF dir, GGUF file or orbax checkpoint dir")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--upstream-model", default="", help="openai: model name at the upstream endpoint")
    parser.add_argument("--model-name", default="psysafe", help="model id this server reports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=32, help="most requests decoded together")
    parser.add_argument("--batch-window-s", type=float, default=0.01, help="wait for more requests this long")
    args = parser.parse_args(argv)
    if args.backend == "jax":
        from common.compile_cache import enable_compilation_cache
        from common.platform_flags import apply_platform_defaults
        apply_platform_defaults()  # before JAX starts: XLA reads its GPU flags then
        enable_compilation_cache()
    cfg = backend_config(args.backend)
    cfg.update(dict(model_path=args.model_path, dtype=args.dtype, model=args.upstream_model,
                    max_batch=args.max_batch))
    app = make_app(make_backend(cfg), model_name=args.model_name, max_batch=args.max_batch,
                   batch_window_s=args.batch_window_s)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
