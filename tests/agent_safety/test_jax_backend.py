"""JaxBackend: batching logic with a stand-in sampler (fast), and the real SmolLM2 through
`common.generate` checked against transformers' greedy decoding (slow)."""

import types

import pytest

import common
from agent_safety.backends import ChatMessage, ChatRequest
from agent_safety.backends.jax_backend import JaxBackend

END = 0


class CharTokenizer:
    """Characters as token ids (id = ord), END = 0; a chat template of "<role>content" pieces."""

    chat_template = "<role>content"

    def apply_chat_template(self, messages, chat_template, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text, add_special_tokens):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens):
        return "".join(chr(i) for i in ids)


def _request(text, **kw):
    return ChatRequest(messages=(ChatMessage("user", text),), **kw)


def test_one_sampler_call_per_sampling_setting(monkeypatch):
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, temperature, top_k, top_p, seed, stop_token_ids,
                      engine="auto"):
        calls.append((len(prompts), max_new_tokens, temperature))
        # Reply with the prompt's last user character repeated, then END unless the budget runs out.
        outs = []
        for p in prompts:
            ids = [p[-len("<assistant>") - 1]] * min(3, max_new_tokens)
            ids += [END] if max_new_tokens > 3 else []
            outs.append(types.SimpleNamespace(token_ids=ids, text="", logprobs=None))
        return outs

    monkeypatch.setattr(common, "generate", fake_generate, raising=False)
    backend = JaxBackend(model=None, tokenizer=CharTokenizer(), stop_token_ids=[END], max_batch=2)
    requests = [_request("a", max_tokens=8), _request("b", max_tokens=2), _request("c", max_tokens=8),
                _request("d", max_tokens=8), _request("e", max_tokens=2, temperature=0.0)]
    results = backend.complete_batch(requests)
    assert [r.text for r in results] == ["aaa", "bb", "ccc", "ddd", "ee"]
    assert [r.finish_reason for r in results] == ["stop", "length", "stop", "stop", "length"]
    assert calls == [(2, 8, 0.0), (1, 8, 0.0), (2, 2, 0.0)]  # grouped by settings, chunked by max_batch
    assert results[0].prompt_tokens == len("<user>a<assistant>") and results[0].completion_tokens == 4


def test_a_prompt_beyond_the_context_fails_alone_without_a_sampler_call(monkeypatch):
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, **kw):
        calls.append([len(p) for p in prompts])
        return [types.SimpleNamespace(token_ids=[ord("y"), END]) for _ in prompts]

    monkeypatch.setattr(common, "generate", fake_generate, raising=False)
    model = types.SimpleNamespace(config=types.SimpleNamespace(max_position_embeddings=40))
    backend = JaxBackend(model=model, tokenizer=CharTokenizer(), stop_token_ids=[END])
    fits, too_long = _request("a", max_tokens=8), _request("b" * 20, max_tokens=8)  # 18 + 8 and 37 + 8 tokens
    results = backend.complete_batch([too_long, fits])
    assert [r.failed for r in results] == [True, False] and results[1].text == "y"
    assert "context too long: 37 prompt tokens + max_tokens 8 > 40" in results[0].error
    assert calls == [[len("<user>a<assistant>")]]


@pytest.mark.slow
def test_smollm2_greedy_matches_transformers(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backend = JaxBackend.from_pretrained(str(smollm2_dir))
    requests = [_request("What is 7 + 5?", max_tokens=16), _request("Name a colour.", max_tokens=16)]
    results = backend.complete_batch(requests)
    assert backend.generate_calls == 1

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, torch_dtype=torch.float32)
    for request, result in zip(requests, results):
        text = tokenizer.apply_chat_template([m.as_dict() for m in request.messages], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=16, do_sample=False)
        expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert result.text == expected


class TemplatelessTokenizer(CharTokenizer):
    chat_template = None
    name_or_path = "tiny-char"


def test_a_tokenizer_without_chat_template_needs_the_setting_named_in_the_error():
    with pytest.raises(ValueError, match=r"tiny.*no chat template.*backend\.chat_template.*'chatml'"):
        JaxBackend(model=None, tokenizer=TemplatelessTokenizer(), stop_token_ids=[END], name="tiny")
    with pytest.raises(ValueError, match=r"backend\.chat_template.*'nonesuch'.*available: \[.*'chatml'"):
        JaxBackend(model=None, tokenizer=TemplatelessTokenizer(), stop_token_ids=[END], chat_template="nonesuch")


def test_a_tiny_checkpoint_without_template_chats_with_the_named_one(tmp_path, monkeypatch):
    from flax import nnx

    from agent_safety.backends import make_backend
    from agent_safety.run_config import backend_config
    from common.chat import load_chat_template
    from common.checkpoint.orbax_io import save_checkpoint
    from common.config import get_preset
    from common.model import Decoder
    from common.tokenizer import char_tokenizer

    save_checkpoint(tmp_path / "ckpt", Decoder(get_preset("tiny"), rngs=nnx.Rngs(0)), char_tokenizer(), step=1)
    monkeypatch.chdir(tmp_path)
    cfg = backend_config("jax")
    cfg.model_path, cfg.attention = "ckpt", "xla"  # relative: resolved by load_pretrained
    with pytest.raises(ValueError, match=r"no chat template.*backend\.chat_template"):
        make_backend(cfg)
    cfg.chat_template = "chatml"
    backend = make_backend(cfg)
    [result] = backend.complete_batch([_request("What is 7?", max_tokens=4)])
    assert not result.failed and result.completion_tokens <= 4
    expected = backend.tokenizer.apply_chat_template([{"role": "user", "content": "What is 7?"}],
                                                      chat_template=load_chat_template("chatml"), tokenize=False,
                                                      add_generation_prompt=True)
    assert result.prompt_tokens == len(expected)  # one id per character


def test_the_paged_engine_answers_as_the_static_sampler():
    """backend.engine picks what generates; the samples (and so the dialogues) are the same either way."""
    from flax import nnx

    from common.config import get_preset
    from common.model import Decoder
    from common.tokenizer import char_tokenizer

    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(0), attention="xla")
    requests = [_request(text, max_tokens=12, temperature=1.0, seed=s)
                for s, text in enumerate(["hello there", "a much longer question about the weather", "hi"])]
    answers = {}
    for engine in ("static", "paged"):
        backend = JaxBackend(model, char_tokenizer(), chat_template="chatml", engine=engine, max_batch=2)
        answers[engine] = [(r.text, r.completion_tokens) for r in backend.complete_batch(requests)]
    assert answers["paged"] == answers["static"] and answers["paged"][0][1] > 0
