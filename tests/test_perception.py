"""Vision pre-training: existence labels and targets, balanced accuracy, image token features, learning."""

import pytest
import torch
from PIL import Image

from trimpi.models.tiny import FAMILIES, build_tiny
from trimpi.train.perception import (
    balanced_accuracy,
    existence_labels,
    existence_targets,
    image_inputs,
    image_token_features,
    is_vision_parameter,
    pretrain_vision,
    probe_policy_accuracy,
)

RED = {"shape": "cube", "color": "red", "size": "small", "material": "rubber"}
BLUE = {"shape": "sphere", "color": "blue", "size": "large", "material": "metal"}


def test_labels_are_single_values_then_pairs_of_two_types():
    labels = existence_labels()
    singles = [lab for lab in labels if len(lab) == 1]
    pairs = [lab for lab in labels if len(lab) == 2]
    assert len(singles) == 8 + 3 + 2 + 2 and labels[: len(singles)] == singles
    assert len(pairs) == 8 * 3 + 8 * 2 + 8 * 2 + 3 * 2 + 3 * 2 + 2 * 2 and len(set(labels)) == len(labels)
    assert all(a != b for (a, _), (b, _) in pairs)


def test_targets_need_one_object_with_every_value():
    labels = [(("color", "red"),), (("color", "red"), ("shape", "sphere")), (("color", "blue"), ("shape", "sphere")),
              (("color", "green"),)]
    assert existence_targets([RED, BLUE], labels) == [1.0, 0.0, 1.0, 0.0]  # red and sphere, but no red sphere


def test_balanced_accuracy_by_hand():
    scores = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # label 0: TPR 2/2, TNR 2/2 -> 1; label 1: TPR 2/3, TNR 1/1 -> 5/6; label 2 has no positive: skipped
    assert balanced_accuracy(scores, targets) == pytest.approx((1 + 5 / 6) / 2)


TREE = {"root": "1", "nodes": {
    "1": {"if_exists": {"color": "red"}, "yes": "1.1", "no": "Case 3"},
    "1.1": {"if_exists": {"color": "red", "shape": "cube"}, "yes": "Case 1", "no": "Case 2"}}}


def test_probe_policy_accuracy_walks_the_tree_with_the_probe():
    labels = [(("color", "red"),), (("shape", "cube"),), (("color", "red"), ("shape", "cube"))]
    scores = torch.tensor([[1.0, -1.0, 1.0],    # red, red cube -> Case 1 (gold Case 1: hit)
                           [1.0, 1.0, -1.0],    # red, no red cube (the cube score is not asked) -> Case 2 (miss)
                           [-1.0, 1.0, 1.0]])   # no red -> Case 3 (hit)
    result = probe_policy_accuracy(scores, [TREE] * 3, ["Case 1", "Case 1", "Case 3"], labels)
    assert result == {"probe_policy_accuracy": 2 / 3, "probe_policy_records": 3}


def test_probe_policy_accuracy_leaves_out_paths_without_a_label():
    labels = [(("color", "red"),)]  # no label for "red cube"
    scores = torch.tensor([[1.0], [-1.0]])
    result = probe_policy_accuracy(scores, [TREE] * 2, ["Case 1", "Case 3"], labels)
    assert result == {"probe_policy_accuracy": 1.0, "probe_policy_records": 1}


@pytest.mark.parametrize("family", FAMILIES)
def test_image_token_features_match_the_image_token_count(family):
    model, processor = build_tiny(family)
    images = [Image.new("RGB", (112, 112), c) for c in ("red", "blue", "green")]
    feats = image_token_features(model, image_inputs(processor, images))
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = processor.apply_chat_template(conv, add_generation_prompt=True)
    ids = processor(text=[text], images=[[images[0]]], return_tensors="pt")["input_ids"][0]
    n_image_tokens = int((ids == model.config.image_token_id).sum())
    assert feats.shape[:2] == (3, n_image_tokens)


def test_pretraining_learns_a_separable_task_and_leaves_the_text_tower():
    torch.set_num_threads(1)
    model, processor = build_tiny("idefics3", seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    images = [Image.new("RGB", (112, 112), c) for c in ("red", "blue")] * 8
    objects = [[RED], [BLUE]] * 8
    policy_eval = [(0, TREE, "Case 1"), (1, TREE, "Case 3")]  # eval images: red, blue
    result = pretrain_vision(model, processor, images, objects, images[:2], objects[:2], steps=60, lr=3e-3,
                             batch_size=8, progress=False, policy_eval=policy_eval)
    assert result["single_balanced_accuracy"] == 1.0 and result["pair_balanced_accuracy"] == 1.0
    assert result["probe_policy_accuracy"] == 1.0 and result["probe_policy_records"] == 2
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(is_vision_parameter(n) for n in moved)


def _obj(x, y, **attrs):
    return {**RED, **attrs, "pixel_coords": [x, y, 10.0]}


def test_cell_targets_mark_the_centre_cell_and_leave_out_its_neighbours():
    from trimpi.train.perception import cell_targets

    labels = [(("color", "red"),), (("color", "blue"),)]
    # a 4×2 grid over a 40×20 image: cells are 10×10; red at column 0 row 0, blue at column 3 row 1
    target, keep, counts = cell_targets([_obj(5, 5), _obj(35, 15, color="blue")], labels, (40, 20), (4, 2))
    assert target[:, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0] and target[:, 1].tolist() == [0, 0, 0, 0, 0, 0, 0, 1]
    # red's neighbours (columns 0-1, rows 0-1) are left out for "red" only; the far cells stay negatives
    assert keep[:, 0].tolist() == [1, 0, 1, 1, 0, 0, 1, 1]
    assert keep[:, 1].tolist() == [1, 1, 0, 0, 1, 1, 0, 1]
    assert counts.tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    assert target.amax(0).tolist() == existence_targets([_obj(5, 5), _obj(35, 15, color="blue")], labels)


def test_balanced_loss_gains_nothing_from_answering_the_prior():
    from trimpi.train.perception import balanced_bce

    targets = torch.tensor([[1.0]] * 9 + [[0.0]])  # present in 90 % of scenes
    prior = torch.tensor([0.9])
    always_yes = torch.full((10, 1), 4.0)
    never_yes = torch.full((10, 1), -4.0)
    plain = torch.nn.functional.binary_cross_entropy_with_logits
    assert plain(always_yes, targets) < plain(never_yes, targets)  # plain BCE rewards the prior
    assert balanced_bce(always_yes, targets, prior) == pytest.approx(balanced_bce(never_yes, targets, prior).item())


def test_auc_and_metrics_per_kind_by_hand():
    from trimpi.train.perception import auc, perception_metrics

    truth = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    assert auc(torch.tensor([[0.9], [0.2], [0.5], [0.1]]), truth) == [0.75]  # 3 of 4 pairs ordered
    assert auc(torch.tensor([[1.0], [1.0], [1.0], [1.0]]), truth) == [0.5]  # ties count half
    labels = [(("color", "red"),), (("shape", "cube"),), (("color", "red"), ("shape", "cube"))]
    targets = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scores = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    m = perception_metrics(scores, targets, labels)
    assert m["color"] == 1.0 and m["shape"] == pytest.approx(0.75) and m["pair"] == 1.0
    assert m["single"] == pytest.approx(0.875) and m["weakest"] == "shape=cube: 0.750" and m["images"] == 4
