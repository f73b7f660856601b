"""Perception warm-up: captions from scene graphs, their parsing and scoring, a short run end to end."""

import json
from types import SimpleNamespace

import pytest
import torch
from tests._fixtures_train import write_dataset

from trimpi.data.clevr.captions import (
    QUESTIONS,
    attribute_scores,
    caption,
    existence_question,
    parse_caption,
    question_answer,
)
from trimpi.errors import ConfigError
from trimpi.train.warmup import (
    WarmupOptions,
    caption_examples,
    existence_accuracy,
    is_vision_parameter,
    run_warmup,
    scene_items,
    vision_first_callback,
)

SCENE = {"objects": [
    {"shape": "sphere", "color": "red", "size": "large", "material": "metal", "pixel_coords": [90, 40, 5]},
    {"shape": "cube", "color": "cyan", "size": "small", "material": "rubber", "pixel_coords": [20, 40, 5]},
]}


def test_caption_lists_objects_left_to_right_and_parses_back():
    text = caption(SCENE)
    assert text == "2 objects: a small cyan rubber cube, a large red metal sphere."
    assert parse_caption(text) == [
        {"size": "small", "color": "cyan", "material": "rubber", "shape": "cube"},
        {"size": "large", "color": "red", "material": "metal", "shape": "sphere"},
    ]
    perfect = attribute_scores(text, SCENE)
    assert all(v == 1.0 for v in perfect.values())
    half = attribute_scores("1 objects: a small cyan metal cube.", SCENE)
    assert {k: v for k, v in half.items() if not k.endswith("_set")} == {
        "size": 0.5, "color": 0.5, "material": 0.0, "shape": 0.5, "count": 0.0}
    swapped = attribute_scores("2 objects: a large red metal sphere, a small cyan rubber cube.", SCENE)
    assert swapped["color"] == 0.0 and swapped["color_set"] == 1.0


def test_question_answers_use_vocabulary_order():
    assert question_answer(SCENE, "count") == "2 objects."
    assert question_answer(SCENE, "color") == "red, cyan."  # vocabulary order, not left to right
    assert question_answer(SCENE, "shape") == "cube, sphere."
    assert question_answer({"objects": [SCENE["objects"][0]] * 3}, "size") == "large."
    with pytest.raises(ValueError):
        question_answer(SCENE, "texture")


def test_existence_questions_are_balanced_and_answered_by_the_scene():
    import random

    from trimpi.data.clevr.tree import exists

    rng, answers = random.Random(0), []
    for _ in range(400):
        question, answer = existence_question(rng, SCENE)
        words = question.removeprefix("Is there ").removesuffix("?").split()[1:]
        conj = {}
        for w in words:
            for attr, values in (("size", ("small", "large")), ("material", ("rubber", "metal")),
                                 ("shape", ("cube", "sphere", "cylinder"))):
                if w in values:
                    conj[attr] = w
            if w not in ("object", "small", "large", "rubber", "metal", "cube", "sphere", "cylinder"):
                conj["color"] = w
        assert 1 <= len(conj) <= 2
        assert answer == ("Yes." if exists(SCENE["objects"], conj) else "No.")
        answers.append(answer)
    assert 0.4 < answers.count("Yes.") / len(answers) < 0.6


def test_scene_items_are_distinct_images(tmp_path):
    data = write_dataset(tmp_path / "d", n=4, with_gta=True)
    items = scene_items(data)
    assert len(items) == 4  # GTA record (no scene, two images) is skipped; train/train_cot share images
    ex = caption_examples(items)
    assert len(ex) == 4 and ex[0]["messages"][-1]["content"][0]["text"].endswith(".")
    mixed = caption_examples(items, questions=2, seed=1)
    assert len(mixed) == 12 and mixed == caption_examples(items, questions=2, seed=1)
    prompts = [m["messages"][0]["content"][1]["text"] for m in mixed[1:3]]
    assert len(set(prompts)) == 2 and set(prompts) <= set(QUESTIONS)
    with pytest.raises(ConfigError, match="questions"):
        caption_examples(items, questions=len(QUESTIONS) + 1)
    only_yes_no = caption_examples(items, existence=3, captions=False)
    assert len(only_yes_no) == 12
    assert {m["messages"][-1]["content"][0]["text"] for m in only_yes_no} <= {"Yes.", "No."}
    with pytest.raises(ConfigError, match="no examples"):
        caption_examples(items, captions=False)


def test_vision_first_zeroes_text_gradients_then_releases():
    text, vision = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    model = torch.nn.ModuleDict({"text_model": text, "vision_model": vision})
    assert is_vision_parameter("model.vision_model.encoder.0.weight") and not is_vision_parameter("lm_head.weight")
    cb = vision_first_callback(1)
    cb.on_train_begin(None, SimpleNamespace(global_step=0), None, model=model)
    text(vision(torch.ones(1, 2))).sum().backward()
    assert text.weight.grad.abs().sum() == 0 and vision.weight.grad.abs().sum() > 0
    cb.on_step_end(None, SimpleNamespace(global_step=1), None)
    model.zero_grad()
    text(vision(torch.ones(1, 2))).sum().backward()
    assert text.weight.grad.abs().sum() > 0


def test_warmup_runs_and_reports_accuracy(tmp_path):
    data = write_dataset(tmp_path / "d", n=4)
    summary = run_warmup(WarmupOptions(data=str(data), out=str(tmp_path / "wu"), max_steps=2, batch_size=2,
                                       eval_scenes=2, questions=1, vision_first_steps=2))
    assert summary["global_step"] == 2 and summary["examples"] == 4  # 2 train scenes × (caption + 1 question)
    acc = summary["attribute_accuracy"]
    assert acc["scenes"] == 2 and 0.0 <= acc["attributes"] <= 1.0
    saved = json.loads((tmp_path / "wu" / "trimpi_stage.json").read_text())
    assert saved["stage"] == "warmup"
    assert (tmp_path / "wu" / "model.safetensors").is_file()
    from safetensors.torch import load_file

    from trimpi.models.loading import load_model

    fresh = load_model("micro", dtype="float32", device="cpu", data=str(data), seed=0)[0].state_dict()
    trained = load_file(str(tmp_path / "wu" / "model.safetensors"))
    moved = {k for k, v in trained.items() if k in fresh and not torch.equal(v, fresh[k])}
    assert moved and all(is_vision_parameter(k) for k in moved)  # only vision + connector trained


def test_vision_pretraining_and_existence_questions_run_end_to_end(tmp_path):
    data = write_dataset(tmp_path / "d", n=4)
    summary = run_warmup(WarmupOptions(data=str(data), out=str(tmp_path / "wu"), max_steps=2, batch_size=2,
                                       eval_scenes=2, captions=False, existence=2, vision_steps=3,
                                       vision_batch_size=2, progress=False))
    assert summary["examples"] == 4 and "attribute_accuracy" not in summary  # 2 scenes x 2 yes/no questions
    assert summary["vision_pretraining"]["steps"] == 3 and summary["vision_pretraining"]["eval_images"] == 2
    assert summary["vision_pretraining"]["probe_policy_records"] == 2  # both test records walk the policy tree
    assert summary["existence_accuracy"]["questions"] == 2


def test_existence_accuracy_counts_yes_and_no_by_likelihood(tmp_path):
    import random

    from trimpi.models.tiny import build_tiny

    data = write_dataset(tmp_path / "d", n=4)
    model, processor = build_tiny("idefics3")
    items = scene_items(data)
    yes = processor.tokenizer("Yes.", add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # a model that always prefers "Yes.": every logit is a bias, high for its tokens
        model.lm_head.weight.zero_()
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.lm_head.out_features))
        model.lm_head.bias[yes] = 10.0
    got = existence_accuracy(model, processor, items, seed=3)
    rng = random.Random(3)
    answers = [existence_question(rng, json.loads(open(it["scene"]).read()))[1] for it in items]
    assert got["questions"] == 4 and got["accuracy"] == answers.count("Yes.") / 4
    assert got["balanced_accuracy"] == pytest.approx(0.5 if "No." in answers else 1.0)


def test_warmup_killed_during_its_evaluation_is_not_finished(tmp_path, monkeypatch):
    import trimpi.train.warmup as warmup
    from trimpi.train.stage import finished_summary

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    data = write_dataset(tmp_path / "d", n=4)
    opts = WarmupOptions(data=str(data), out=str(tmp_path / "wu"), max_steps=2, batch_size=2, eval_scenes=2,
                         save_steps=2, progress=False)
    with monkeypatch.context() as m:
        m.setattr(warmup, "attribute_accuracy", killed)
        with pytest.raises(KeyboardInterrupt):
            run_warmup(opts)
    assert (tmp_path / "wu" / "model.safetensors").is_file() and finished_summary(tmp_path / "wu") is None
    summary = run_warmup(opts)  # resumes: training is done, the evaluation runs
    assert summary["global_step"] == 2 and finished_summary(tmp_path / "wu")["attribute_accuracy"]["scenes"] == 2


def test_warmup_results_reach_the_pipeline_step_result_and_the_report():
    from trimpi.pipeline.execute import _stage_result
    from trimpi.report.run import step_summary
    from trimpi.train.stage import ATTRIBUTE_ACCURACY, EXISTENCE_ACCURACY, RESULT_KEYS, VISION_PRETRAINING

    summary = {"stage": "warmup", "global_step": 2, "options": {}, ATTRIBUTE_ACCURACY: {"attributes": 0.75},
               EXISTENCE_ACCURACY: {"balanced_accuracy": 0.5}, VISION_PRETRAINING: {"probe_policy_accuracy": 0.625}}
    result = _stage_result(summary)
    assert set(RESULT_KEYS) <= set(result) and "options" not in result
    assert step_summary(result) == ("global_step=2 attribute_accuracy=0.75 existence_balanced_accuracy=0.5 "
                                    "probe_policy_accuracy=0.625")
