"""Attribute crops for ClevrPolicy-M policies: small images standing for a colour, shape or material value."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from trimpi.data.clevr import scene as sc
from trimpi.errors import DataError

_RENDER_W, _RENDER_H = 480, 360
_NEUTRAL = "gray"


def _crop_object(attribute: str, value: str) -> dict:
    """The single large object a crop shows: colour on a rubber cube, shape in gray rubber, material on a sphere."""
    obj = {"shape": "cube", "color": _NEUTRAL, "size": "large", "material": "rubber", "rotation": 35.0}
    obj[attribute] = value
    if attribute == "material":
        obj["shape"] = "sphere"
    obj["3d_coords"] = [0.0, 0.0, sc.object_radius(obj)]
    return obj


@functools.lru_cache(maxsize=64)
def _crop_pixels(attribute: str, value: str) -> np.ndarray:
    from trimpi.data.clevr.render import render_numpy

    img, ids = render_numpy({"objects": [_crop_object(attribute, value)]}, _RENDER_W, _RENDER_H)
    ys, xs = np.nonzero(ids == 0)
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    half = int(np.ceil(max(xs.max() - xs.min(), ys.max() - ys.min()) * 0.65))
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    return img[y0:y0 + 2 * half, x0:x0 + 2 * half]


def render_attribute_crop(attribute: str, value: str, size: int = 64) -> Image.Image:
    """A size x size RGB image showing one attribute value (colour, shape or material); size is never shown."""
    if attribute == "size":
        raise DataError("attribute 'size' is never shown as an image crop")
    if attribute not in sc.ATTRIBUTES:
        raise DataError(f"unknown attribute {attribute!r}: expected one of color, shape, material")
    if value not in sc.ATTRIBUTES[attribute]:
        raise DataError(f"unknown {attribute} {value!r}: expected one of {', '.join(sc.ATTRIBUTES[attribute])}")
    if not isinstance(size, int) or size < 8:
        raise DataError(f"crop size must be an integer >= 8, got {size!r}")
    return Image.fromarray(_crop_pixels(attribute, value)).resize((size, size), Image.Resampling.LANCZOS)
