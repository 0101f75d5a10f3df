"""An OpenAI-compatible model server over the rollout engine (`common.engine`): requests join the running
batch as they arrive. The command: `python tools/serve.py --model NAME`.

model_server.py: one model under one id, and the checks that turn a request body into engine sequences;
loop.py: the engine loop (one thread owns the scheduler; handlers only submit and read); generation.py: one
request's choices as tokens arrive (detokenization, stop strings, cancellation); text.py: incremental
detokenization and stop strings; protocol.py: OpenAI's JSON; app.py: the FastAPI routes, API key, streaming;
thread.py: uvicorn on a loopback port in this process. Imported lazily, so that `common.serving.thread` does
not pull in JAX.
"""

__all__ = ["ModelServer", "ServerThread", "make_app"]
_HOMES = {"ModelServer": "model_server", "ServerThread": "thread", "make_app": "app"}


def __getattr__(name):
    if name in _HOMES:
        import importlib
        return getattr(importlib.import_module(f"common.serving.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'common.serving' has no attribute {name!r}")
