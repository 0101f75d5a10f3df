"""The jitted GRPO pieces: response log-probs in chunks equal the unchunked ones through the decoder, the loss
settings come from the config, and the update donates its parameters and optimiser state."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from common.config import get_preset
from common.model import Decoder
from rl_scaling.grpo.defaults import default_config
from rl_scaling.grpo.train_step import LossConfig, make_logprob_fn, make_update_fn, response_logprobs

N, P, R = 4, 5, 7


def _policy(tied=True):
    cfg = dataclasses.replace(get_preset("tiny"), tie_embeddings=tied)
    return cfg, nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)))


def _batch(vocab_size, micro=2, seed=0):
    rs = np.random.RandomState(seed)
    tokens = rs.randint(1, vocab_size, (N, P + R)).astype(np.int32)
    mask = (np.arange(R)[None] < rs.randint(1, R + 1, N)[:, None]).astype(np.float32)
    batch = {"tokens": tokens, "start": rs.randint(0, 3, N).astype(np.int32), "targets": tokens[:, P:],
             "mask": mask, "advantages": rs.randn(N).astype(np.float32),
             "old_logp": -rs.rand(N, R).astype(np.float32), "ref_logp": -rs.rand(N, R).astype(np.float32)}
    return {k: jnp.asarray(v.reshape(-1, micro, *v.shape[1:])) for k, v in batch.items()}


@pytest.mark.parametrize("tied", [True, False])
def test_response_logprobs_in_chunks_equal_unchunked(tied):
    cfg, (graphdef, params) = _policy(tied)
    b = {k: v.reshape(N, *v.shape[2:]) for k, v in _batch(cfg.vocab_size).items()}

    @jax.jit
    def both(params):
        model = nnx.merge(graphdef, params)
        return [response_logprobs(model, b["tokens"], b["start"], b["targets"], 0.7, chunk=chunk)
                for chunk in (3, 0)]

    chunked, full = both(params)
    for c, f in zip(chunked, full):
        assert c.shape == (N, R)
        np.testing.assert_allclose(np.asarray(c), np.asarray(f), rtol=1e-6, atol=1e-6)
    logp = make_logprob_fn(graphdef, 0.7, chunk=3)(params, b["tokens"], b["start"], b["targets"])
    np.testing.assert_allclose(np.asarray(logp), np.asarray(full[0]), rtol=1e-6, atol=1e-6)


def test_loss_config_from_the_grpo_block():
    g = default_config().grpo
    assert LossConfig.from_config(g) == LossConfig(max_response_len=g.max_response_len)
    g.dual_clip, g.log_ratio_clamp, g.logprob_chunk = 3.0, 20.0, 0
    cfg = LossConfig.from_config(g)
    assert (cfg.dual_clip, cfg.log_ratio_clamp, cfg.logprob_chunk) == (3.0, 20.0, 0)


def test_update_donates_params_and_optimizer_state_and_chunking_changes_nothing():
    cfg, (graphdef, params) = _policy()
    batch = _batch(cfg.vocab_size)
    optimizer = optax.sgd(0.1, momentum=0.9)  # its momentum is optimiser state to donate
    metrics = []
    for chunk in (3, 0):
        update = make_update_fn(graphdef, optimizer, LossConfig(kl_coef=0.1, logprob_chunk=chunk))
        donated = jax.tree.map(jnp.copy, params)
        opt_state = optimizer.init(donated)
        new_params, new_state, m = update(donated, opt_state, batch)
        assert all(x.is_deleted() for x in jax.tree.leaves((donated, opt_state)))
        assert not any(x.is_deleted() for x in jax.tree.leaves((new_params, new_state)))
        metrics.append(m)
    for name in ("loss", "entropy", "kl", "grad_norm"):
        np.testing.assert_allclose(float(metrics[0][name]), float(metrics[1][name]), rtol=1e-6, err_msg=name)
