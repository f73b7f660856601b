"""Collator loss masks, token by token, on tiny random models of four families."""

import pytest
import torch

from trimpi.data.schema import PolicyStore, load_records, render_messages
from trimpi.models.processing import tokenizer_of, visual_token_ids
from trimpi.models.tiny import FAMILIES, build_tiny
from trimpi.train.collate import Collator
from trimpi.train.logprobs import IGNORE_INDEX, sequence_logprobs

TOKENS_PER_IMAGE = {"qwen2_vl": 16, "qwen2_5_vl": 16, "idefics3": 16, "llava": 64, "fast_vlm": 12}


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    model, processor = build_tiny(request.param)
    return request.param, model, processor


def _features(root, policy: bool, reasoning: bool = True):
    records = load_records(root / "train_cot.jsonl")
    store = PolicyStore(root)
    return [{"messages": render_messages(r, root, store.get(r) if policy else None, placement="user",
                                         with_target=True, with_reasoning=reasoning)} for r in records]


@pytest.mark.parametrize("side", ["right", "left"])
def test_all_but_visual_mask_exact(tiny, train_data, side):
    family, model, processor = tiny
    feats = _features(train_data, policy=True)
    batch = Collator(processor, "all_but_visual", padding_side=side, config=model.config)(feats)
    vis = set(visual_token_ids(processor, model.config))
    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    image_tok = processor.image_token_id if hasattr(processor, "image_token_id") else None
    for b in range(ids.shape[0]):
        pos = attn[b].nonzero().squeeze(-1).tolist()
        for t in range(ids.shape[1]):
            expect = t in pos and t != pos[0] and ids[b, t].item() not in vis
            assert (labels[b, t] != IGNORE_INDEX).item() == expect, (family, b, t)
            if expect:
                assert labels[b, t] == ids[b, t]
        n_images = 2 + (1 if feats[b]["messages"][0]["content"][1]["type"] == "image" else 0)
        if image_tok is not None and feats[b]["messages"][-1]["content"][0]["text"].startswith("<think>"):
            assert (ids[b] == image_tok).sum().item() >= TOKENS_PER_IMAGE[family] * (n_images - 1)
    assert (labels != IGNORE_INDEX).sum() > 50


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("reasoning", [True, False])
def test_completion_mask_is_exactly_the_target(tiny, train_data, side, reasoning):
    family, model, processor = tiny
    feats = _features(train_data, policy=False, reasoning=reasoning)
    batch = Collator(processor, "completion", padding_side=side)(feats)
    tok = tokenizer_of(processor)
    eot = tok.eos_token
    for b, f in enumerate(feats):
        target = f["messages"][-1]["content"][0]["text"]
        labelled = batch["labels"][b][batch["labels"][b] != IGNORE_INDEX].tolist()
        assert tok.decode(labelled) == target + eot
        keep = (batch["labels"][b] != IGNORE_INDEX).nonzero().squeeze(-1)
        assert keep.tolist() == list(range(keep[0].item(), keep[-1].item() + 1))  # one contiguous span
    assert reasoning == ("<think>" in tok.decode(batch["labels"][0][batch["labels"][0] >= 0].tolist()))


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_logprobs_match_single_examples(tiny, train_data, side):
    family, model, processor = tiny
    feats = _features(train_data, policy=True)
    coll = Collator(processor, "all_but_visual", padding_side=side, config=model.config)
    with torch.no_grad():
        lp, mask = sequence_logprobs(model, coll(feats))
        for b, f in enumerate(feats):
            lp1, mask1 = sequence_logprobs(model, coll([f]))
            assert mask[b].sum() == mask1[0].sum()
            assert torch.allclose(lp[b][mask[b]], lp1[0][mask1[0]], atol=1e-5), family
