"""RL checkpoints reload the saved weights for every family (save_pretrained may rename keys)."""

import pytest
import torch

from trimpi.models.tiny import build_tiny
from trimpi.train.rl.checkpoint import _load_weights


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
def test_saved_weights_load_back_into_a_fresh_model(family, tmp_path):
    trained, processor = build_tiny(family, seed=0)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    trained.save_pretrained(tmp_path)
    fresh, _ = build_tiny(family, seed=1)
    _load_weights(fresh, tmp_path)
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
