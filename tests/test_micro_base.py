"""The shipped micro base: export, SHA-256 check at load, plain-transformers reload, and the presets."""

from __future__ import annotations

import json

import pytest
import torch

from trimpi.errors import ModelError
from trimpi.models import presets
from trimpi.models.shipped import export_base, load_base, verify_base
from trimpi.models.tiny import build_tiny


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, processor = build_tiny("idefics3")
    out = tmp_path_factory.mktemp("base") / "base"
    manifest = export_base(model, processor, out, {"name": "test base", "steps": 3, "command": "trimpi pretrain"})
    return out, model, manifest


def test_export_writes_half_weights_card_and_hash(exported):
    out, _, manifest = exported
    assert (out / "README.md").read_text().count(manifest["sha256"]) == 1
    assert json.loads((out / "base.json").read_text())["sha256"] == manifest["sha256"]
    assert manifest["storage_dtype"] == "bfloat16" and manifest["size_mb"] < 50


def test_base_reloads_with_plain_transformers_in_the_compute_dtype(exported):
    from transformers import AutoModelForImageTextToText

    out, model, _ = exported
    plain = AutoModelForImageTextToText.from_pretrained(str(out), dtype=torch.float32)
    loaded, processor = load_base(out)
    assert next(loaded.parameters()).dtype == torch.float32
    assert hasattr(processor, "image_processor")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a.to(torch.bfloat16).float(), b), name
    assert torch.equal(next(plain.parameters()), next(loaded.parameters()))
    assert model.dtype == torch.float32  # exporting did not round the model in memory


def test_modified_weights_are_refused_with_one_line(exported, tmp_path):
    import shutil

    out, _, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        load_base(copy)
    assert "SHA-256" in str(e.value) and "\n" not in str(e.value)
    (copy / "base.json").unlink()
    with pytest.raises(ModelError, match="not a shipped base"):
        verify_base(copy)


def test_micro_uses_the_shipped_base_when_present(exported, monkeypatch):
    out, _, _ = exported
    monkeypatch.setattr(presets, "BASE_DIR", out)
    model, _ = presets.build_preset("micro")
    assert model.config.text_config.hidden_size == 64  # the exported tiny model, not micro-scratch's 256


def test_micro_falls_back_to_scratch_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "BASE_DIR", tmp_path / "absent")
    with pytest.warns(UserWarning, match="micro-scratch"):
        model, _ = presets.build_preset("micro", texts=["a red cube"])
    assert model.config.text_config.hidden_size == presets.MICRO.hidden
    scratch, _ = presets.build_preset("micro-scratch", texts=["a red cube"])
    assert scratch.config.text_config.hidden_size == presets.MICRO.hidden
