"""Materialize the bundled sample's images from installed packages, deterministically.

`sample/images.json` maps each image path used by `sample/dataset.json` to a source:

    {"source": "skimage", "name": "astronaut"}          scikit-image's bundled photos
    {"source": "sklearn", "name": "china.jpg"}          scikit-learn's sample images
    {"source": "matplotlib", "name": "grace_hopper.jpg"} matplotlib's sample data
    {"source": "text", "lines": [...], "size": [w, h], "font_size": n, "background": ..., ...}
    {"source": "bars", "title": ..., "labels": [...], "values": [...], "size": [w, h]}

Rendered images use matplotlib's bundled DejaVu Sans font through Pillow, so the same
library versions give the same bytes.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

from trimpi.errors import DataError

SAMPLE_DIR = Path(__file__).parent / "sample"
JPEG_QUALITY = 90


@functools.lru_cache(maxsize=8)
def font(size: int) -> Any:
    """DejaVu Sans (shipped with matplotlib) at `size` pixels."""
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)


def _photo(spec: dict[str, Any]) -> Any:
    import numpy as np
    from PIL import Image

    source, name = spec["source"], spec["name"]
    if source == "skimage":
        import skimage.data

        arr = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            arr = arr[0]
        if arr.dtype != np.uint8:
            arr = (arr.astype(float) * 255).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr)
    if source == "sklearn":
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(name))
    if source == "matplotlib":
        from matplotlib.cbook import get_sample_data

        with get_sample_data(name) as f:
            img = Image.open(f)
            img.load()
        return img.convert("RGB")
    raise DataError(f"images.json: unknown image source {source!r}")


def text_layout(spec: dict[str, Any]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Each line of a text image with its pixel box (x1, y1, x2, y2), as drawn."""
    f = font(spec.get("font_size", 28))
    x, y = spec.get("margin", [30, 24])
    spacing = spec.get("line_spacing", int(spec.get("font_size", 28) * 1.6))
    boxes = []
    for i, line in enumerate(spec["lines"]):
        left, top, right, bottom = f.getbbox(line)
        boxes.append((line, (x + left, y + i * spacing + top, x + right, y + i * spacing + bottom)))
    return boxes


def _text_image(spec: dict[str, Any]) -> Any:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", tuple(spec["size"]), spec.get("background", "white"))
    draw = ImageDraw.Draw(img)
    f = font(spec.get("font_size", 28))
    x, y = spec.get("margin", [30, 24])
    spacing = spec.get("line_spacing", int(spec.get("font_size", 28) * 1.6))
    for i, line in enumerate(spec["lines"]):
        draw.text((x, y + i * spacing), line, fill=spec.get("color", "black"), font=f)
    return img


def bars_layout(spec: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """What a bar chart draws, in order: ("title"|"bar"|"value"|"label", text, geometry)."""
    w, h = spec["size"]
    top, bottom, left = 70, h - 50, 60
    vmax = max(spec["values"]) * 1.15
    step = (w - left - 30) / len(spec["values"])
    items: list[tuple[str, str, Any]] = [("title", spec["title"], (w // 2, 14))]
    for i, (label, value) in enumerate(zip(spec["labels"], spec["values"], strict=True)):
        x1 = int(left + i * step + step * 0.2)
        x2 = int(left + (i + 1) * step - step * 0.2)
        y1 = int(bottom - (bottom - top) * value / vmax)
        items.append(("bar", label, (x1, y1, x2, bottom)))
        items.append(("value", str(value), ((x1 + x2) // 2, y1 - 6)))
        items.append(("label", label, ((x1 + x2) // 2, bottom + 8)))
    return items


_BAR_TEXT = {"title": (22, "mt"), "value": (16, "mb"), "label": (16, "mt")}


def bars_text_boxes(spec: dict[str, Any]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Each text drawn on a bar chart with its pixel box (x1, y1, x2, y2)."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    out = []
    for kind, text, xy in bars_layout(spec):
        if kind in _BAR_TEXT:
            size, anchor = _BAR_TEXT[kind]
            out.append((text, tuple(int(v) for v in draw.textbbox(xy, text, font=font(size), anchor=anchor))))
    return out


def _bars(spec: dict[str, Any]) -> Any:
    from PIL import Image, ImageDraw

    w, h = spec["size"]
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.line((60, h - 50, w - 20, h - 50), fill="black", width=2)
    for kind, text, xy in bars_layout(spec):
        if kind == "bar":
            draw.rectangle(xy, fill=spec.get("color", "#3b75af"))
        else:
            size, anchor = _BAR_TEXT[kind]
            draw.text(xy, text, fill="black", font=font(size), anchor=anchor)
    return img


def render(spec: dict[str, Any]) -> Any:
    """The PIL image for one images.json entry."""
    if spec["source"] == "text":
        return _text_image(spec)
    if spec["source"] == "bars":
        return _bars(spec)
    return _photo(spec)


def encode(img: Any, path: str) -> bytes:
    """PNG or JPEG bytes by file extension."""
    buf = io.BytesIO()
    if path.lower().endswith((".jpg", ".jpeg")):
        img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(buf, "JPEG", quality=JPEG_QUALITY)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def image_specs(sample_dir: Path = SAMPLE_DIR) -> dict[str, dict[str, Any]]:
    from trimpi.data.io import read_json

    return read_json(sample_dir / "images.json")


def materialize(dest: str | Path, sample_dir: Path = SAMPLE_DIR) -> list[str]:
    """Write every sample image under `dest` (same relative paths); return the paths written."""
    dest = Path(dest)
    written = []
    for rel, spec in sorted(image_specs(sample_dir).items()):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode(render(spec), rel))
        written.append(rel)
    return written
