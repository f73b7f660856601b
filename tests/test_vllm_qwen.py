"""The vLLM engine on a tiny Qwen2.5-VL (run in .venv-vllm by `make test-vllm`): trimpi's
processor without a video processor still loads in vLLM; greedy tokens, sampling log-probs
and weight updates agree with HF."""

from __future__ import annotations


import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` runs this in .venv-vllm")

from _vllm_fixtures import GREEDY, engine_setup, perturbed, assert_greedy_agree, hf_greedy, max_logprob_gap, prompts  # noqa: E402
from trimpi.generation.engine import SamplingParams  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    setup = engine_setup(tmp_path_factory, "qwen2_5_vl", n=2)
    yield setup
    setup[3].close()


def test_greedy_tokens_and_sampling_logprobs_match(setup, monkeypatch):
    root, model, processor, engine = setup
    batch = prompts(processor, root) + prompts(processor, root, policy=True)
    got = [g[0].token_ids for g in engine.generate(batch, 1, GREEDY)]
    assert_greedy_agree(model, processor, batch, got, [c.token_ids for c in hf_greedy(model, processor, batch)])
    torch.manual_seed(0)
    monkeypatch.setattr(engine, "suppress", [])  # the trainer scores over the whole vocabulary
    sample = SamplingParams(max_completion_length=10, temperature=0.8)
    groups = engine.generate(batch, 2, sample)
    assert max_logprob_gap(model, processor, batch, groups, sample.temperature) < 2e-3


def test_weight_sync(setup):
    root, model, processor, engine = setup
    batch = prompts(processor, root, policy=True)
    changed = perturbed(model)
    try:
        engine.update_weights(changed)
        got = [g[0].token_ids for g in engine.generate(batch, 1, GREEDY)]
        assert_greedy_agree(changed, processor, batch, got, [c.token_ids for c in hf_greedy(changed, processor, batch)])
        assert got != [c.token_ids for c in hf_greedy(model, processor, batch)]
    finally:
        engine.update_weights(model)
