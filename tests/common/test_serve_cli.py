"""tools/serve.py and tools/psysafe_server.py build the right server from their flags (uvicorn and the model
loader replaced: nothing listens, nothing is read from disk)."""

import dataclasses
from pathlib import Path

import pytest
import uvicorn
from flax import nnx

import common.api
from common.config import get_preset
from common.model import Decoder
from common.tokenizer import char_tokenizer
from tests.load_file import load_module

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def launched(monkeypatch):
    """(what uvicorn.run was given, the models loaded)."""
    runs, loads = [], []
    tokenizer = char_tokenizer()
    model = Decoder(dataclasses.replace(get_preset("tiny"), vocab_size=len(tokenizer)), rngs=nnx.Rngs(0))

    def load(path, **kw):
        loads.append((path, kw))
        return model, tokenizer

    monkeypatch.setattr(common.api, "load_pretrained", load)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    yield runs, loads
    for app, _ in runs:  # the engine loops the tools started
        server = getattr(app.state, "model_server", None)
        if server is not None:
            server.close()


def routes(app):
    return {r.path for r in app.routes}


def test_serve_builds_the_engine_server_with_its_flags(launched, monkeypatch):
    runs, loads = launched
    monkeypatch.setenv("QRR_API_KEY", "from-env")
    tool = load_module(TOOLS / "serve.py", "serve_tool")
    assert tool.main(["--model", "smollm2-135m-instruct", "--port", "8123", "--chat-template", "chatml",
                      "--max-slots", "4", "--max-model-len", "128"]) == 0
    (app, kw), = runs
    server = app.state.model_server
    assert kw["port"] == 8123 and loads[0][0] == "smollm2-135m-instruct"
    assert server.model_id == "smollm2-135m-instruct" and server.engine.max_slots == 4 and server.context_limit == 128
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= routes(app) and server.loop.alive


def test_psysafe_server_serves_a_local_model_through_the_engine_and_proxies_the_rest(launched):
    runs, _ = launched
    tool = load_module(TOOLS / "psysafe_server.py", "psysafe_server_tool")
    tool.main(["--backend", "jax", "--model-path", "m", "--model-name", "judge", "--chat-template", "chatml",
               "--max-batch", "8"])
    tool.main(["--backend", "scripted"])
    (jax_app, _), (scripted_app, _) = runs
    assert jax_app.state.model_server.model_id == "judge" and jax_app.state.model_server.engine.max_slots == 8
    assert "/v1/completions" in routes(jax_app) and "/v1/completions" not in routes(scripted_app)
