"""The OpenAI-compatible server over the engine (common/serving), through the official `openai` client on a
loopback port, on a tiny random model with a character tokenizer: streaming equals the whole response,
n choices, stop strings, log-probabilities, usage, errors of one request that leave the others alone, the API
key, requests that join a running batch, and a client that goes away."""

import dataclasses
import threading
import time

import httpx
import openai
import pytest
from flax import nnx

from common.chat import chat_prompt_ids
from common.config import get_preset
from common.model import Decoder
from common.serving import ModelServer, ServerThread, make_app
from common.tokenizer import char_tokenizer

KEY = "sk-serving-test-secret"
MODEL = "tiny-chat"
CONTEXT = 256


@pytest.fixture(scope="module")
def served():
    tokenizer = char_tokenizer()
    config = dataclasses.replace(get_preset("tiny"), vocab_size=len(tokenizer))  # every id spells a character
    model = Decoder(config, rngs=nnx.Rngs(0))
    server = ModelServer(model, tokenizer, MODEL, chat_template="chatml", max_slots=8, page_size=16,
                         max_model_len=CONTEXT)
    with ServerThread(make_app(server, api_key=KEY)) as http:
        yield server, http


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[1].base_url, api_key=KEY, max_retries=0, timeout=60)


def chat(client, text="hi", **kw):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


def test_streamed_chunks_reassemble_to_the_whole_response(client):
    whole = chat(client, max_tokens=24, temperature=0)
    stream = chat(client, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content and finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    completion = client.completions.create(model=MODEL, prompt="1+2=", max_tokens=16, temperature=0.7, seed=5)
    pieces = client.completions.create(model=MODEL, prompt="1+2=", max_tokens=16, temperature=0.7, seed=5,
                                       stream=True)
    assert "".join(c.choices[0].text for c in pieces) == completion.choices[0].text != ""


def test_n_choices_differ_and_a_seed_repeats_them(client):
    kw = dict(max_tokens=12, temperature=1.0, seed=11, n=3, extra_body={"ignore_eos": True})
    first, again = chat(client, **kw), chat(client, **kw)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert [c.message.content for c in again.choices] == texts
    assert first.usage.completion_tokens == 3 * 12
    streamed = chat(client, stream=True, **kw)
    by_index = {}
    for chunk in streamed:
        for c in chunk.choices:
            by_index[c.index] = by_index.get(c.index, "") + (c.delta.content or "")
    assert [by_index[i] for i in range(3)] == texts


def test_usage_counts_the_prompt_and_every_generated_token(served, client):
    server, _ = served
    out = chat(client, "count me", max_tokens=9, temperature=0, logprobs=True, extra_body={"ignore_eos": True})
    prompt = chat_prompt_ids(server.tokenizer, [{"role": "user", "content": "count me"}], template="chatml")
    content = out.choices[0].logprobs.content
    assert out.usage.prompt_tokens == len(prompt) and out.usage.completion_tokens == len(content) == 9
    assert out.usage.total_tokens == len(prompt) + 9 and out.choices[0].finish_reason == "length"
    assert "".join(t.token for t in content) == out.choices[0].message.content


def test_top_logprobs_rank_the_step_and_hold_the_greedy_token(client):
    out = chat(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    for t in out.choices[0].logprobs.content:
        ranked = [x.logprob for x in t.top_logprobs]
        assert len(ranked) == 3 and ranked == sorted(ranked, reverse=True)
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-5)
    legacy = client.completions.create(model=MODEL, prompt="ab", max_tokens=4, temperature=0, logprobs=2)
    assert all(len(d) <= 2 for d in legacy.choices[0].logprobs.top_logprobs)
    with pytest.raises(openai.BadRequestError, match="between 0 and 20"):
        chat(client, max_tokens=2, logprobs=True, top_logprobs=21)


def test_a_stop_string_cuts_the_text_and_ends_the_sequence(served, client):
    kw = dict(max_tokens=40, temperature=1.0, seed=3, extra_body={"ignore_eos": True})
    full = client.completions.create(model=MODEL, prompt="x", **kw).choices[0].text
    stop = full[10:12]
    cut = full[:full.index(stop)]
    out = client.completions.create(model=MODEL, prompt="x", stop=[stop, "never-there"], **kw)
    assert out.choices[0].text == cut and out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens < 40
    streamed = client.completions.create(model=MODEL, prompt="x", stop=stop, stream=True, **kw)
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == cut and chunks[-1].choices[0].finish_reason == "stop"
    deadline = time.monotonic() + 5
    while served[0].loop.running and time.monotonic() < deadline:  # the cancel reaches the loop
        time.sleep(0.01)
    assert served[0].loop.running == 0


def test_bad_requests_fail_alone_with_a_400_naming_the_problem(client):
    with pytest.raises(openai.BadRequestError, match="max_tokens must be at least 1"):
        chat(client, max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        chat(client, temperature=-1)
    with pytest.raises(openai.BadRequestError, match="'robot'"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="'tools' is not supported"):
        chat(client, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    result = {}

    def good():
        stream = chat(client, max_tokens=30, temperature=0, stream=True, extra_body={"ignore_eos": True})
        result["text"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    worker = threading.Thread(target=good)
    worker.start()
    with pytest.raises(openai.BadRequestError, match=r"tokens.*engine allows 256") as error:
        chat(client, "y" * 300, max_tokens=8)
    worker.join(60)
    assert error.value.status_code == 400 and error.value.body["param"] == "messages"
    assert len(result["text"]) == 30


def test_unknown_models_are_404_and_errors_have_openais_shape(served, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    body = httpx.post(f"{served[1].base_url}/completions", json={"model": "gpt-9", "prompt": "x"},
                      headers={"Authorization": f"Bearer {KEY}"}).json()
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"] == "model_not_found"


def test_the_api_key_is_required_and_never_echoed(served):
    bad = openai.OpenAI(base_url=served[1].base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as error:
        bad.models.list()
    assert KEY not in str(error.value.body) and error.value.status_code == 401
    plain = httpx.post(f"{served[1].base_url}/chat/completions", json={"messages": []})  # no key at all
    assert plain.status_code == 401 and KEY not in plain.text
    assert httpx.get(f"{served[1].base_url[:-3]}/health").status_code == 200  # open: a probe needs no key


def test_a_request_joins_the_running_batch_and_a_gone_client_is_cancelled(served, client):
    server, _ = served
    handles = []
    submit = server.loop.submit
    server.loop.submit = lambda seqs, sink: handles.append(submit(seqs, sink)) or handles[-1]
    try:
        long = client.completions.create(model=MODEL, prompt="a", max_tokens=CONTEXT - 2, temperature=0,
                                         stream=True, extra_body={"ignore_eos": True})
        next(iter(long))  # the long one decodes
        short = client.completions.create(model=MODEL, prompt="b", max_tokens=4, temperature=0)
        first = handles[0].sequences[0]
        assert short.choices[0].finish_reason in ("length", "stop")
        assert first.finish_reason is None  # answered while the long one still runs: it joined the batch
        long.close()  # the client goes away mid-stream
        deadline = time.monotonic() + 10
        while first.finish_reason is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.finish_reason == "cancelled" and len(first.generated) < CONTEXT - 2
    finally:
        server.loop.submit = submit


def test_an_engine_failure_fails_the_requests_in_flight_and_the_server_goes_on(served, client, monkeypatch):
    server, _ = served
    step = server.engine.step
    calls = []

    def failing_once(scheduler, params):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("device fell over")
        return step(scheduler, params)

    monkeypatch.setattr(server.engine, "step", failing_once)
    with pytest.raises(openai.InternalServerError, match="device fell over"):
        chat(client, max_tokens=20, extra_body={"ignore_eos": True})
    stream = chat(client, max_tokens=5, temperature=0, stream=True, extra_body={"ignore_eos": True})
    assert sum(len(c.choices[0].delta.content or "") for c in stream if c.choices) == 5
    assert server.loop.failures == 1 and server.loop.alive


def test_the_load_test_at_a_tiny_size_loses_no_request(served, capsys):
    from pathlib import Path

    from tests.load_file import load_module

    bench = load_module(Path(__file__).resolve().parents[2] / "tools" / "bench_serving.py", "bench_serving")
    code = bench.main(["--url", served[1].base_url, "--api-key", KEY, "--clients", "3", "--seconds", "1.5",
                       "--sequential-seconds", "0.5", "--max-tokens", "6", "--prompt", "hi", "--prompt", "1+1?"])
    out = capsys.readouterr().out
    assert code == 0 and "| 3 concurrent (streaming) |" in out and "| 1 (one at a time) |" in out
    rows = [line.split("|") for line in out.splitlines() if "(streaming) |" in line or "at a time) |" in line]
    assert all(int(r[3]) > 0 and int(r[4]) == 0 and int(r[5]) == 6 * int(r[3]) for r in rows)  # requests, lost, tokens
