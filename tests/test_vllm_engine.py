"""The vLLM engine on a tiny Idefics3 (run in .venv-vllm by `make test-vllm`): it agrees with HF
generate on greedy tokens and with the trainer on log-probs, follows weight updates, never
samples visual tokens, and sees the policy's images."""

from __future__ import annotations


import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` runs this in .venv-vllm")

from _vllm_fixtures import (  # noqa: E402
    GREEDY,
    assert_greedy_agree,
    engine_setup,
    greedy_after_sync,
    hf_greedy,
    max_logprob_gap,
    perturbed,
    prompts,
)
from trimpi.errors import ConfigError  # noqa: E402
from trimpi.generation.engine import SamplingParams  # noqa: E402
from trimpi.generation.prompts import Prompt  # noqa: E402
from trimpi.models.processing import visual_token_ids  # noqa: E402

TOL = 2e-3  # fp32 on both sides; differences come from kernel order only
SAMPLE = SamplingParams(max_completion_length=10, temperature=0.8)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # the engine draws its per-prompt sampling seeds from torch's generator


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    setup = engine_setup(tmp_path_factory, "idefics3", n=4)
    yield setup
    setup[3].close()


def test_greedy_tokens_match_hf_generate(setup):
    root, model, processor, engine = setup
    engine.update_weights(model)
    batch = prompts(processor, root) + prompts(processor, root, policy=True)
    got = [g[0] for g in engine.generate(batch, 1, GREEDY)]
    want = hf_greedy(model, processor, batch)
    assert_greedy_agree(model, processor, batch, [c.token_ids for c in got], [c.token_ids for c in want])
    same = [i for i, (a, b) in enumerate(zip(got, want)) if a.token_ids == b.token_ids]
    assert len(same) >= 3 and all((got[i].text, got[i].truncated) == (want[i].text, want[i].truncated) for i in same)


def test_n_samples_with_sampling_logprobs_match_the_trainer(setup, monkeypatch):
    root, model, processor, engine = setup
    engine.update_weights(model)
    monkeypatch.setattr(engine, "suppress", [])  # the trainer scores over the whole vocabulary
    batch = prompts(processor, root, k=3)
    groups = engine.generate(batch, 3, SAMPLE)
    assert [len(g) for g in groups] == [3, 3, 3]
    assert len({tuple(c.token_ids) for g in groups for c in g}) > 3  # sampled, not copies
    assert all(len(c.logprobs) == len(c.token_ids) for g in groups for c in g)
    assert max_logprob_gap(model, processor, batch, groups, SAMPLE.temperature) < TOL


def test_visual_tokens_are_never_sampled(setup):
    root, model, processor, engine = setup
    engine.update_weights(model)
    hot = SamplingParams(max_completion_length=24, temperature=2.0)  # flat: ~4% visual tokens unless suppressed
    groups = engine.generate(prompts(processor, root, k=4), 4, hot)
    sampled = [t for g in groups for c in g for t in c.token_ids]
    assert len(sampled) > 200 and not set(sampled) & set(visual_token_ids(processor, model.config))


def test_policy_images_reach_vllm(setup, monkeypatch):
    """The policy-aware prompt carries the query image and the policy's; vLLM's log-probs match the
    trainer's for that prompt, and not for one whose policy image is another colour."""
    root, model, processor, engine = setup
    engine.update_weights(model)
    monkeypatch.setattr(engine, "suppress", [])
    batch = prompts(processor, root, k=1, policy=True)
    assert len(batch[0].images) == 2
    groups = engine.generate(batch, 2, SAMPLE)
    assert max_logprob_gap(model, processor, batch, groups, SAMPLE.temperature) < TOL
    from PIL import Image

    other = [Prompt(batch[0].text, [batch[0].images[0], Image.new("RGB", (112, 112), (40, 200, 60))])]
    assert max_logprob_gap(model, processor, other, groups, SAMPLE.temperature) > 10 * TOL


def test_after_a_weight_sync_vllm_samples_from_the_new_weights(setup, monkeypatch):
    root, model, processor, engine = setup
    monkeypatch.setattr(engine, "suppress", [])
    batch = prompts(processor, root) + prompts(processor, root, policy=True)
    engine.update_weights(model)
    before = [g[0].token_ids for g in engine.generate(batch, 1, GREEDY)]
    changed = perturbed(model)
    try:
        assert greedy_after_sync(engine, changed, processor, batch) != before
        groups = engine.generate(batch[:1], 2, SAMPLE)
        assert max_logprob_gap(changed, processor, batch[:1], groups, SAMPLE.temperature) < TOL
    finally:
        engine.update_weights(model)
    assert [g[0].token_ids for g in engine.generate(batch, 1, GREEDY)] == before


def test_a_prompt_longer_than_the_engine_is_refused_in_one_line(setup):
    root, model, processor, engine = setup
    batch = prompts(processor, root, k=1)
    long = [Prompt(batch[0].text.replace("According", "According " * 1200), batch[0].images)]  # > max_model_len 1024
    with pytest.raises(ConfigError, match="vLLM refused a prompt: .*1024.*--vllm-max-model-len") as e:
        engine.generate(long, 1, GREEDY)
    assert "\n" not in str(e.value)
    assert engine.generate(batch, 1, GREEDY)[0][0].token_ids  # the engine still works
