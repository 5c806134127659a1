"""Derived parameter counts match the totals the sources publish (within 2%)."""

from __future__ import annotations

import pytest

from sim.perf.params import active_params, total_params

MODEL_IDS = ("llama-2-70b llama-3.1-8b llama-3.1-70b llama-3.1-405b mixtral-8x7b mixtral-8x22b "
             "deepseek-v3 gpt-oss-120b qwen3-14b qwen3-32b codellama-34b").split()


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_total_matches_published(lib, model_id):
    m = lib.model(model_id)
    derived_b = total_params(m.architecture) / 1e9
    assert derived_b == pytest.approx(m.published_params.total_b, rel=0.02)


@pytest.mark.parametrize("model_id", ["mixtral-8x7b", "mixtral-8x22b", "deepseek-v3"])
def test_moe_active_matches_published(lib, model_id):
    m = lib.model(model_id)
    assert m.published_params.active_b is not None
    assert active_params(m.architecture) / 1e9 == pytest.approx(m.published_params.active_b,
                                                                rel=0.02)


def test_gpt_oss_active_excludes_the_input_embedding(lib):
    # OpenAI's 5.13B active counts the unembedding but not the embedding lookup
    a = lib.model("gpt-oss-120b").architecture
    active_b = (active_params(a) - a.vocab_size * a.hidden_size) / 1e9
    assert active_b == pytest.approx(lib.model("gpt-oss-120b").published_params.active_b, rel=0.02)


def test_deepseek_is_671b_without_mtp(lib):
    m = lib.model("deepseek-v3")
    assert total_params(m.architecture) / 1e9 == pytest.approx(671, rel=0.005)
