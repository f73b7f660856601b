"""Shared helpers for the vLLM engine tests (run in .venv-vllm by `make test-vllm`).

Tiny models here have head_dim 32: vLLM's CPU attention kernel refuses head_dim 16 (the
default TinySize)."""

from __future__ import annotations

import torch

from trimpi.data.schema import PolicyStore, load_records
from trimpi.generation.engine import Completion, HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import PromptBuilder
from trimpi.generation.vllm_engine import VLLMOptions
from trimpi.models.tiny import TinySize, build_tiny
from trimpi.train.rl.rollout import Sample
from trimpi.train.rl.update import sample_logps

SIZE = TinySize(hidden=128, heads=4, kv_heads=2, intermediate=256)
OPTIONS = VLLMOptions(max_model_len=1024, kv_cache_memory_bytes=64 << 20)
TEXTS = ["Policy L2-Test. Condition 1: is there a red object? yes: Case 1. no: Case 2.",
         "According to Policy: L2-Test, what should be the response?", "<think>x</think> \\boxed{Case 1}"] * 5
GREEDY = SamplingParams(max_completion_length=12, top_k=1)


def tiny(family: str, seed: int = 0):
    return build_tiny(family, texts=TEXTS, size=SIZE, seed=seed)


def prompts(processor, root, k: int = 2, policy: bool = False):
    """Prompts of the first k records of ROOT/train.jsonl, with their policy in context or not."""
    builder, records = PromptBuilder(processor, root), load_records(root / "train.jsonl")[:k]
    store = PolicyStore(root) if policy else None
    return [builder(r, store.get(r) if store else None) for r in records]


def hf_greedy(model, processor, batch):
    return [g[0] for g in HFGenerateEngine(model, processor).generate(batch, 1, GREEDY)]


def assert_greedy_agree(model, processor, batch, got, want, tie: float = 1e-3) -> None:
    """Greedy tokens agree, except after a near-tie: where the two first differ, HF must give
    both tokens log-probs within `tie` (engines may then break the tie either way)."""
    for prompt, a, b in zip(batch, got, want):
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if k is None:
            assert len(a) == len(b)
            continue
        completions = [Completion(b[: k + 1], "", True), Completion(b[:k] + [a[k]], "", True)]
        logps = trainer_logps(model, processor, [prompt], [completions], 1.0)
        assert abs(float(logps[0][k] - logps[1][k])) < tie, f"greedy tokens differ at {k} without a tie"


def greedy_after_sync(engine, model, processor, batch) -> list[list[int]]:
    """Sync `model` into `engine` and decode `batch` greedily: the tokens, checked against HF generate on `model`."""
    engine.update_weights(model)
    got = [g[0].token_ids for g in engine.generate(batch, 1, GREEDY)]
    assert_greedy_agree(model, processor, batch, got, [c.token_ids for c in hf_greedy(model, processor, batch)])
    return got


def trainer_logps(model, processor, batch, groups, temperature: float) -> list[torch.Tensor]:
    """What the trainer computes for each sampled completion, given the prompt it was sampled from."""
    samples = [Sample(None, 0, False, p, c) for p, g in zip(batch, groups) for c in g]
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        logps, _ = sample_logps(model, processor, samples, pad, temperature)
    return [logps[i, : len(s.completion.token_ids)] for i, s in enumerate(samples)]


def max_logprob_gap(model, processor, batch, groups, temperature: float) -> float:
    """Largest |vLLM sampling log-prob − trainer log-prob| over every sampled token."""
    ref = trainer_logps(model, processor, batch, groups, temperature)
    got = [torch.tensor(c.logprobs) for g in groups for c in g]
    return max(float((a - b).abs().max()) for a, b in zip(got, ref))


def engine_setup(tmp_path_factory, family: str, n: int):
    """(dataset root, tiny model, processor, colocated vLLM engine) on a dataset with a policy image."""
    from test_rl_fixtures import make_dataset
    from trimpi.generation.vllm_engine import VLLMEngine

    root = make_dataset(tmp_path_factory.mktemp(f"vllm_{family}") / "data", n=n, with_policy_image=True)
    model, processor = tiny(family)
    return root, model, processor, VLLMEngine(model, processor, OPTIONS)


def perturbed(model, scale: float = 0.05):
    """A copy of `model` with Gaussian noise added to every weight (a trainer step's worth of change)."""
    import copy

    changed = copy.deepcopy(model)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(torch.randn_like(p) * scale)
    return changed
