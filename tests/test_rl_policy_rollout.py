"""PolicyRollout batch assembly and log-probs under the no-policy prompt."""

from __future__ import annotations

import torch

from test_rl_fixtures import make_dataset, tiny_model
from trimpi.data.schema import PolicyStore, load_records
from trimpi.generation.engine import HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import PromptBuilder
from trimpi.train.rl.encoding import completion_logps, scoring_batch
from trimpi.train.rl.rewards import RewardSpec
from trimpi.train.rl.rollout import make_batch, sample_groups
from trimpi.train.rl.update import batch_logps


def test_policy_rollout_batch(tmp_path):
    root = make_dataset(tmp_path, n=4, with_policy_image=True)
    records = load_records(root / "train.jsonl")[:3]
    model, proc = tiny_model()
    torch.manual_seed(0)
    g = 3
    builder = PromptBuilder(proc, root)
    engine = HFGenerateEngine(model, proc, batch_size=2)
    samples = sample_groups(engine, builder, records, [10, 11, 12], g, SamplingParams(max_completion_length=6),
                            RewardSpec(), PolicyStore(root))
    assert len(samples) == 2 * g * len(records)
    for k, rec in enumerate(records):
        group = [s for s in samples if s.record is rec]
        assert len(group) == 2 * g
        assert {s.group_id for s in group} == {10 + k}
        assert sum(s.policy_aware for s in group) == g
        plain = builder(rec)
        aware = builder(rec, PolicyStore(root).get(rec))
        assert len(aware.images) == 2 and "L2-Test" in aware.text
        for s in group:  # every stored prompt is the no-policy prompt
            assert s.prompt.text == plain.text and len(s.prompt.images) == 1

    batch = make_batch(samples, "group", mask_truncated=False)
    pad = proc.tokenizer.pad_token_id
    old = batch_logps(model, proc, batch, micro_batch_size=5, pad_token_id=pad)
    assert old.shape == batch.mask.shape
    # fresh single-example forward on (no-policy prompt + completion)
    for i in [0, g, 2 * g - 1, len(samples) - 1]:
        s = samples[i]
        plain = builder(s.record)
        inputs, pos, ids = scoring_batch(proc, [plain], [s.completion.token_ids], pad)
        with torch.no_grad():
            single, _ = completion_logps(model, inputs, pos, ids)
        n = len(s.completion.token_ids)
        assert torch.allclose(old[i, :n], single[0, :n], atol=1e-5)
        assert batch.mask[i, :n].sum() == n and batch.mask[i, n:].sum() == 0
    # advantages are computed over the merged 2G group
    for gid in batch.group_ids.unique():
        sel = batch.group_ids == gid
        assert sel.sum() == 2 * g
        assert abs(float(batch.advantages[sel].sum())) < 1e-4


def test_model_inputs_follow_the_model_dtype_and_keep_integer_tensors():
    import torch

    from trimpi.generation.prompts import to_model

    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    moved = to_model({"pixel_values": torch.zeros(1, 3), "input_ids": torch.ones(1, 4, dtype=torch.long),
                      "mask": torch.ones(1, 4, dtype=torch.bool), "other": None}, model)
    assert moved["pixel_values"].dtype == torch.bfloat16
    assert moved["input_ids"].dtype == torch.long and moved["mask"].dtype == torch.bool and moved["other"] is None
