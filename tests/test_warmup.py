"""Perception warm-up: captions from scene graphs, their parsing and scoring, a short run end to end."""

import json

from tests._fixtures_train import write_dataset
from trimpi.train.captions import attribute_scores, caption, parse_caption
from trimpi.train.warmup import WarmupOptions, caption_examples, run_warmup, scene_items

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


def test_scene_items_are_distinct_images(tmp_path):
    data = write_dataset(tmp_path / "d", n=4, with_gta=True)
    items = scene_items(data)
    assert len(items) == 4  # GTA record (no scene, two images) is skipped; train/train_cot share images
    ex = caption_examples(items)
    assert ex[0]["messages"][-1]["content"][0]["text"].endswith(".")


def test_warmup_runs_and_reports_accuracy(tmp_path):
    data = write_dataset(tmp_path / "d", n=4)
    summary = run_warmup(WarmupOptions(data=str(data), out=str(tmp_path / "wu"), max_steps=2, batch_size=2,
                                       eval_scenes=2))
    assert summary["global_step"] == 2
    acc = summary["attribute_accuracy"]
    assert acc["scenes"] == 2 and 0.0 <= acc["attributes"] <= 1.0
    saved = json.loads((tmp_path / "wu" / "trimpi_stage.json").read_text())
    assert saved["stage"] == "warmup"
    assert (tmp_path / "wu" / "model.safetensors").is_file()
