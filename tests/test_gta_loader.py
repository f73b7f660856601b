"""GTA release loading: the bundled sample's coverage and one-line errors naming file and field."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from trimpi.data.gta.loader import load_gta, result_text
from trimpi.data.gta.policy import TOOL_NAMES
from trimpi.data.gta.sample_images import SAMPLE_DIR, image_specs
from trimpi.errors import DataError


def _item(tool="OCR", image="image/a.jpg"):
    return {
        "tools": [{"name": tool}],
        "files": [{"type": "image", "path": "image/a.jpg"}],
        "dialogs": [
            {"role": "user", "content": "Read the sign."},
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": tool, "arguments": {"image": image}}}],
            },
            {"role": "tool", "name": tool, "content": {"type": "text", "content": "(1, 2, 3, 4) STOP"}},
            {"role": "assistant", "content": "It says STOP."},
        ],
        "gt_answer": {"whitelist": [["STOP"]], "blacklist": None},
    }


def make_release(root: Path, items: dict | None = None) -> Path:
    (root / "image").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(root / "image/a.jpg")
    (root / "dataset.json").write_text(json.dumps(items if items is not None else {"0": _item()}))
    (root / "toolmeta.json").write_text(json.dumps({n: {"name": n} for n in TOOL_NAMES}))
    return root


def _one_line_error(root: Path, *needles: str) -> str:
    with pytest.raises(DataError) as e:
        load_gta(root)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_minimal_release_loads(tmp_path):
    items = load_gta(make_release(tmp_path))
    assert len(items) == 1
    it = items[0]
    assert it.query == "Read the sign." and it.images == ["image/a.jpg"]
    assert [c.tool for c in it.calls] == ["OCR"] and it.calls[0].result == "(1, 2, 3, 4) STOP"


def test_missing_dataset_json(tmp_path):
    root = make_release(tmp_path)
    (root / "dataset.json").unlink()
    _one_line_error(root, "dataset.json", "not found")


def test_missing_directory(tmp_path):
    _one_line_error(tmp_path / "nope", "nope", "not found")


def test_malformed_json(tmp_path):
    root = make_release(tmp_path)
    (root / "dataset.json").write_text('{"0": {"tools": [}')
    _one_line_error(root, "dataset.json", "malformed JSON")


def test_unknown_tool_name(tmp_path):
    root = make_release(tmp_path, {"0": _item(tool="Teleport")})
    _one_line_error(root, "dataset.json", "item '0'", "tools", "Teleport")
    item = _item()
    item["dialogs"][1]["tool_calls"][0]["function"]["name"] = "OCR_v9"
    (root / "dataset.json").write_text(json.dumps({"7": item}))
    _one_line_error(root, "dataset.json", "item '7'", "dialogs[1].tool_calls[0].function.name", "OCR_v9")


def test_unknown_tool_in_toolmeta(tmp_path):
    root = make_release(tmp_path)
    (root / "toolmeta.json").write_text(json.dumps({"Teleport": {}}))
    _one_line_error(root, "toolmeta.json", "name", "Teleport")


def test_call_referencing_missing_image(tmp_path):
    root = make_release(tmp_path, {"3": _item(image="image/b.jpg")})
    _one_line_error(
        root, "dataset.json", "item '3'", "dialogs[1].tool_calls[0].function.arguments.image", "image/b.jpg"
    )


def test_file_missing_on_disk(tmp_path):
    item = _item()
    item["files"].append({"type": "image", "path": "image/gone.jpg"})
    root = make_release(tmp_path, {"0": item})
    _one_line_error(root, "dataset.json", "files[1].path", "image/gone.jpg")


def test_image_produced_by_earlier_tool_may_be_used(tmp_path):
    item = _item()
    item["dialogs"][2]["content"] = {"type": "image", "content": "image/out.png"}
    item["dialogs"].insert(
        3,
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "function": {
                        "name": "AddText",
                        "arguments": {"image": "image/out.png", "text": "hi", "position": "lt"},
                    }
                }
            ],
        },
    )
    items = load_gta(make_release(tmp_path, {"0": item}))
    assert [c.tool for c in items[0].calls] == ["OCR", "AddText"]


def test_result_text_shapes():
    assert result_text({"type": "text", "content": "a  b\n\n c "}) == "a b\nc"
    assert result_text({"type": "image", "content": "image/x.png"}) == "[image] image/x.png"
    assert result_text([1, 2]) == "[1, 2]"
    assert result_text("x" * 5000).endswith("...")


def test_bundled_sample_coverage(tmp_path):
    from trimpi.data.gta.sample_images import materialize

    materialize(tmp_path)
    items = load_gta(SAMPLE_DIR, image_root=tmp_path)
    calls = [c for it in items for c in it.calls]
    assert len(items) >= 30 and len(calls) >= 80
    assert set(Counter(c.tool for c in calls)) == set(TOOL_NAMES)
    assert sum(len(it.images) > 1 for it in items) >= 3
    assert sum(len(it.calls) >= 3 for it in items) >= 8
    assert all(c.result for c in calls)
    used = {p for it in items for p in it.images}
    assert used <= set(image_specs())


def test_sample_ocr_results_match_the_rendered_text(tmp_path):
    from trimpi.data.gta.sample_images import bars_text_boxes, materialize, text_layout

    materialize(tmp_path)
    specs = image_specs()
    checked = 0
    for it in load_gta(SAMPLE_DIR, image_root=tmp_path):
        for c in it.calls:
            spec = specs.get(c.arguments.get("image", ""), {})
            if c.tool == "OCR" and spec.get("source") in ("text", "bars"):
                boxes = text_layout(spec) if spec["source"] == "text" else bars_text_boxes(spec)
                for text, (x1, y1, x2, y2) in boxes:
                    assert f"({x1}, {y1}, {x2}, {y2}) {' '.join(text.split())}" in c.result.splitlines()
                checked += 1
    assert checked >= 5
