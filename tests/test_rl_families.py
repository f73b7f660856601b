"""Rollout + scoring across model families: padded batches give single-example log-probs."""

from __future__ import annotations

import pytest
import torch

from test_rl_fixtures import POLICY_TEXT, make_dataset
from trimpi.data.schema import PolicyStore, load_records
from trimpi.generation.engine import HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import PromptBuilder
from trimpi.train.rl.encoding import completion_logps, scoring_batch
from trimpi.train.rl.rewards import RewardSpec
from trimpi.train.rl.rollout import make_batch, sample_groups
from trimpi.train.rl.update import batch_logps


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "llava"])
def test_padded_scoring_matches_single_examples(family, tmp_path):
    from trimpi.models.tiny import build_tiny

    root = make_dataset(tmp_path, n=3, with_policy_image=True)
    records = load_records(root / "train.jsonl")
    records[1].query += " Please answer with the case label only, nothing else."  # different prompt lengths
    model, proc = build_tiny(family, texts=[POLICY_TEXT, records[1].query] * 5)
    torch.manual_seed(0)
    builder = PromptBuilder(proc, root)
    samples = sample_groups(HFGenerateEngine(model, proc), builder, records, [0, 1, 2], 2,
                            SamplingParams(max_completion_length=5), RewardSpec(), PolicyStore(root))
    batch = make_batch(samples, "group", mask_truncated=False)
    pad = proc.tokenizer.pad_token_id
    batched = batch_logps(model, proc, batch, micro_batch_size=len(samples), pad_token_id=pad)
    for i, s in enumerate(samples):
        inputs, pos, ids = scoring_batch(proc, [builder(s.record)], [s.completion.token_ids], pad)
        with torch.no_grad():
            single, _ = completion_logps(model, inputs, pos, ids)
        n = len(s.completion.token_ids)
        assert torch.allclose(batched[i, :n], single[0, :n], atol=1e-4), (family, i)
