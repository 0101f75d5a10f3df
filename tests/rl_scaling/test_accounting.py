"""Parameter counts against published model cards; step FLOPs and the ledger against hand counts."""

import json
from types import SimpleNamespace

import pytest

from rl_scaling.accounting import (
    ComputeLedger,
    causal_context_tokens,
    embedding_params,
    non_embedding_params,
    step_compute,
    total_params,
)


def _cfg(**kw):
    return SimpleNamespace(**kw)


QWEN2_5_0_5B = _cfg(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14,
                    num_kv_heads=2, head_dim=64, attention_bias=True, tie_embeddings=True)
QWEN2_5_1_5B = _cfg(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
                    num_kv_heads=2, head_dim=128, attention_bias=True, tie_embeddings=True)
QWEN2_5_7B = _cfg(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                  num_kv_heads=4, head_dim=128, attention_bias=True, tie_embeddings=False)
SMOLLM2_135M = _cfg(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                    num_kv_heads=3, head_dim=64, attention_bias=False, tie_embeddings=True)
# Hand-countable: per layer q 16 + k 8 + v 8 + o 16 + bias (4 + 2 + 2) + mlp 3·4·8 = 96 + norms 8 = 160;
# 2 layers + final norm 4 = 324; tied embedding 10·4 = 40.
TINY = _cfg(vocab_size=10, hidden_size=4, intermediate_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
            head_dim=2, attention_bias=True, tie_embeddings=True)


def test_published_total_parameter_counts():
    assert total_params(QWEN2_5_0_5B) == 494_032_768
    assert total_params(QWEN2_5_7B) == 7_615_616_512
    assert total_params(SMOLLM2_135M) == 134_515_008


def test_published_non_embedding_counts_to_model_card_precision():
    # 494,032,768 - 151,936·896 = 357,898,112: "358M" / "0.36B" on the card
    assert round(non_embedding_params(QWEN2_5_0_5B) / 1e6) == 358
    assert round(non_embedding_params(QWEN2_5_0_5B) / 1e9, 2) == 0.36
    assert round(non_embedding_params(QWEN2_5_1_5B) / 1e9, 2) == 1.31  # card: 1.54B total, 1.31B non-emb
    assert round(total_params(QWEN2_5_1_5B) / 1e9, 2) == 1.54
    assert round(non_embedding_params(QWEN2_5_7B) / 1e9, 2) == 6.53


def test_tiny_config_by_hand():
    assert non_embedding_params(TINY) == 324
    assert embedding_params(TINY) == 40
    assert total_params(TINY) == 364
    untied = _cfg(**{**vars(TINY), "tie_embeddings": False, "attention_bias": False})
    assert total_params(untied) == 324 - 2 * 8 + 80


def test_missing_config_field_is_named():
    cfg = _cfg(**{k: v for k, v in vars(TINY).items() if k != "head_dim"})
    with pytest.raises(AttributeError, match="head_dim"):
        total_params(cfg)


def test_causal_context_tokens():
    assert causal_context_tokens([4, 6]) == 10 + 21
    assert causal_context_tokens([]) == 0


def test_step_compute_by_hand():
    # Two sequences: prompts 3 + 3 tokens, responses 1 + 3 tokens -> lengths 4 and 6, T = 10, N = 324.
    s = step_compute(TINY, prompt_tokens=6, response_tokens=4, sequence_lengths=[4, 6], kl_coef=0.001)
    assert s.tokens == 10
    assert s.c_paper == 19_440  # 6·324·10
    assert s.rollout_prefill == 3_888  # 2·324·6
    assert s.rollout_decode == 2_592  # 2·324·4
    assert s.old_logprob_forward == 6_480  # 2·324·10
    assert s.reference_forward == 6_480
    assert s.training == 19_440
    # attention forward 4·L·H·hd·(10 + 21) = 4·2·2·2·31 = 992; rollout + old + ref + 3·train = 6 passes
    assert s.attention == 5_952
    # lm head forward 2·V·d·response = 2·10·4·4 = 320; 6 passes
    assert s.lm_head == 1_920
    # 3888 + 2592 + 6480 + 6480 + 19440 + 5952 + 1920
    assert s.c_full == 46_752
    assert s.as_dict()["c_full"] == 46_752


def test_step_compute_switches():
    s = step_compute(TINY, 6, 4, kl_coef=0.0, old_logprob_forward=False, ppo_epochs=2, n_params=500)
    assert s.c_paper == 6 * 500 * 10  # nominal N for the paper's C
    assert s.reference_forward == 0 and s.old_logprob_forward == 0 and s.attention == 0
    assert s.training == 2 * 19_440
    assert s.lm_head == 320 * (1 + 3 * 2)


def test_step_compute_rejects_bad_input():
    with pytest.raises(ValueError, match="sequence_lengths sum to 9"):
        step_compute(TINY, 6, 4, sequence_lengths=[4, 5])
    with pytest.raises(ValueError, match="response_tokens"):
        step_compute(TINY, 6, -1)


def test_ledger_accumulates_and_resumes_exactly():
    steps = [step_compute(QWEN2_5_7B, 512 * 8 * 300, 512 * 8 * 2000 + i, kl_coef=0.001) for i in range(6)]
    uninterrupted = ComputeLedger()
    for s in steps:
        uninterrupted.add_step(s, num_prompts=512)

    first = ComputeLedger()
    for s in steps[:3]:
        first.add_step(s, num_prompts=512)
    resumed = ComputeLedger()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for s in steps[3:]:
        resumed.add_step(s, num_prompts=512)

    assert resumed.state_dict() == uninterrupted.state_dict()
    assert uninterrupted.data == 6 * 512
    assert uninterrupted.steps == 6
    assert uninterrupted.compute == sum(6 * non_embedding_params(QWEN2_5_7B) * s.tokens for s in steps)
    assert uninterrupted.compute_full == sum(s.c_full for s in steps)
    assert uninterrupted.metrics()["D"] == 3072.0


def test_ledger_state_errors_name_the_key():
    state = ComputeLedger().state_dict()
    del state["c_paper"]
    with pytest.raises(KeyError, match="c_paper"):
        ComputeLedger().load_state_dict(state)
    state = ComputeLedger().state_dict()
    state["tokens"] = 1.5
    with pytest.raises(ValueError, match="tokens"):
        ComputeLedger().load_state_dict(state)
