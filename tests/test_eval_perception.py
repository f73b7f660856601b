"""The `perception` protocol: balanced accuracy per attribute value / value pair from scene graphs."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from trimpi.data.clevr.existence import label_balanced_accuracies
from trimpi.eval.perception import perception_scores, question, says_yes

RED_CUBE = {"shape": "cube", "color": "red", "size": "large", "material": "metal"}
BLUE_SPHERE = {"shape": "sphere", "color": "blue", "size": "small", "material": "rubber"}


def test_balanced_accuracy_by_hand():
    # one label, 3 positives (2 found), 1 negative (rejected): (2/3 + 1/1) / 2
    pred = [[True], [True], [False], [False]]
    truth = [[True], [True], [True], [False]]
    assert label_balanced_accuracies(pred, truth) == [pytest.approx((2 / 3 + 1) / 2)]
    # always "yes" on a label present in 3 of 4 images: plain accuracy 0.75, balanced 0.5
    assert label_balanced_accuracies([[True]] * 4, truth) == [0.5]
    assert math.isnan(label_balanced_accuracies([[True]] * 2, [[True]] * 2)[0])  # one class only


def test_scores_per_value_and_pair_from_scene_graphs():
    labels = [(("color", "red"),), (("shape", "sphere"),), (("color", "red"), ("shape", "cube"))]
    scenes = [[RED_CUBE], [BLUE_SPHERE], [RED_CUBE, BLUE_SPHERE], [BLUE_SPHERE]]
    # truth: red T F T F; sphere F T T T; red cube T F T F
    predicted = [[True, True, True],     # sphere: false alarm
                 [False, True, True],    # red cube: false alarm
                 [True, False, True],    # sphere: missed
                 [False, True, False]]
    rows, summary = perception_scores(predicted, scenes, labels)
    by = {r["label"]: r for r in rows}
    assert by["color=red"]["balanced_accuracy"] == 1.0
    assert by["shape=sphere"]["balanced_accuracy"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-4)
    assert by["color=red,shape=cube"]["balanced_accuracy"] == pytest.approx((1 + 1 / 2) / 2)
    assert by["color=red"]["positives"] == 2 and by["shape=sphere"]["negatives"] == 1
    assert summary["single_balanced_accuracy"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
    assert summary["single_min"] == pytest.approx(1 / 3, abs=1e-4) and summary["single_below_target"] == 1
    assert summary["pair_min"] == 0.75 and summary["pair_below_target"] == 1
    assert summary["per_value"] == {"color=red": 1.0, "shape=sphere": pytest.approx(1 / 3, abs=1e-4)}


def test_too_few_scenes_is_a_one_line_error():
    from trimpi.errors import DataError

    with pytest.raises(DataError, match="no attribute value is both present and absent among the 1 test images"):
        perception_scores([[True, False]], [[RED_CUBE]], [(("color", "red"),), (("shape", "cube"),)])


def test_questions_read_like_policy_conditions():
    assert question((("color", "cyan"), ("shape", "cube"))) == "Is there a cyan cube?"
    assert question((("size", "large"),)) == "Is there a large object?"


def test_protocol_runs_on_a_clevrpolicy_directory(dataset, tmp_path):
    from test_eval_fixtures import tiny_for
    from trimpi.eval.runner import EvalOptions, Subject, evaluate_model

    model, processor = tiny_for(dataset)
    subject = Subject.from_model(model, processor, name="tiny")
    opts = EvalOptions(protocols=["perception"], limit=3, progress=False)
    res = evaluate_model(subject, dataset, tmp_path / "out", opts)
    summary = next(iter(res.values()))["protocols"]["perception"]
    assert summary["images"] == 3 and summary["labels"] == 15 + 72
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions_perception.jsonl").open()]
    assert len(rows) == 87 and {r["kind"] for r in rows} == {"single", "pair"}
    scored = [r["balanced_accuracy"] for r in rows if r["balanced_accuracy"] is not None]
    assert scored and all(0.0 <= v <= 1.0 for v in scored)


class Favouring(torch.nn.Module):
    """A stand-in model whose last-position logits favour one token id."""

    def __init__(self, vocab: int, token: int):
        super().__init__()
        self.vocab, self.token = vocab, token
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **kw):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[:, -1, self.token] = 1.0
        return SimpleNamespace(logits=logits)


def test_yes_is_read_from_the_start_of_the_reply(dataset):
    from test_eval_fixtures import tiny_for
    from trimpi.data.schema import load_records

    _, processor = tiny_for(dataset)
    tok = processor.tokenizer
    yes, no = (tok(t, add_special_tokens=False)["input_ids"][0] for t in ("Yes.", "No."))
    image = str(dataset / load_records(dataset / "test.jsonl")[0].images[0])
    asked = [(image, "Is there a cube?"), (image, "Is there a red object?"), (image, "Is there a small sphere?")]
    assert says_yes(Favouring(len(tok), yes), processor, asked, batch_size=2) == [True] * 3
    assert says_yes(Favouring(len(tok), no), processor, asked, batch_size=2) == [False] * 3
