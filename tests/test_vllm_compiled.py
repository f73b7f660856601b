"""The vLLM engine compiled (`enforce_eager=False`, run in .venv-vllm by `make test-vllm`): on CPU it is
eager unless asked, and compiled it still agrees with HF generate and follows weight syncs (compiled
graphs must read the synced weights, not constants frozen at compile time)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` runs this in .venv-vllm")

from _vllm_fixtures import OPTIONS, greedy_after_sync, perturbed, prompts, tiny
from test_rl_fixtures import make_dataset
from trimpi.generation.vllm_engine import VLLMEngine


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("vllm_compiled") / "data", n=2, with_policy_image=True)
    model, processor = tiny("idefics3")
    engine = VLLMEngine(model, processor, dataclasses.replace(OPTIONS, enforce_eager=False))
    yield root, model, processor, engine
    engine.close()


def test_the_engine_is_compiled_only_when_asked(setup):
    assert OPTIONS.eager is (not torch.cuda.is_available())
    assert setup[3].llm.llm_engine.vllm_config.model_config.enforce_eager is False


def test_a_compiled_engine_agrees_with_hf_and_follows_weight_syncs(setup, monkeypatch):
    root, model, processor, engine = setup
    monkeypatch.setattr(engine, "suppress", [])
    batch = prompts(processor, root) + prompts(processor, root, policy=True)
    before = greedy_after_sync(engine, model, processor, batch)
    assert greedy_after_sync(engine, perturbed(model), processor, batch) != before
