"""The micro base shipped in the package (src/trimpi/models/base): its weights match the card's SHA-256,
it reloads with plain transformers, and it sees attribute values in scenes it was never trained on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trimpi.data.clevr.existence import existence_labels, existence_targets, label_balanced_accuracies
from trimpi.data.clevr.render import render_numpy
from trimpi.data.clevr.scene import sample_scene
from trimpi.eval.perception import question, says_yes
from trimpi.models.presets import BASE_DIR, build_preset, shipped_base_present
from trimpi.models.shipped import verify_base

pytestmark = pytest.mark.skipif(not shipped_base_present(), reason="no micro base shipped yet (make micro-base)")

HELD_OUT_SEED = 77_001  # the pretraining corpus draws scenes from its own seed stream (data.pretrain.split)
SCENES = 8
MIN_BALANCED_ACCURACY = 0.85  # measured on the full evaluation sets in benchmarks/RESULTS.md


def test_shipped_base_matches_its_card_and_loads_as_micro():
    manifest = verify_base(BASE_DIR)
    assert manifest["size_mb"] <= 50 and manifest["storage_dtype"] == "bfloat16"
    assert "trimpi pretrain micro-base" in manifest["command"]
    model, _ = build_preset("micro")
    assert sum(p.numel() for p in model.parameters()) == manifest["architecture"]["parameters"]


def test_shipped_base_sees_attribute_values_in_held_out_scenes(tmp_path):
    model, processor = build_preset("micro")
    rng = np.random.default_rng(HELD_OUT_SEED)
    labels = [label for label in existence_labels() if len(label) == 1]
    questions, truth = [], []
    for i in range(SCENES):
        scene = sample_scene(rng, 160, 120, f"{i}.png", i, "test", 3, 6, 100)
        path = tmp_path / f"{i}.png"
        Image.fromarray(render_numpy(scene, 160, 120)[0]).save(path)
        questions += [(str(path), question(label)) for label in labels]
        truth.append([t > 0.5 for t in existence_targets(scene["objects"], labels)])
    flat = says_yes(model, processor, questions)
    predicted = [flat[i * len(labels):(i + 1) * len(labels)] for i in range(SCENES)]
    accuracies = [a for a in label_balanced_accuracies(predicted, truth) if a == a]  # NaN: value never/always present
    assert np.mean(accuracies) >= MIN_BALANCED_ACCURACY, dict(zip(map(str, labels), accuracies, strict=False))
