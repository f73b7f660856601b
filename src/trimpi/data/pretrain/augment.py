"""Rendering variety for pretraining images, applied after the numpy renderer (which stays untouched).

The evaluation images may come from Blender or from a CLEVR v1.0 release, whose lighting, colour
balance, noise and framing differ from the numpy renderer's. Each pretraining image is therefore
rendered at a random size and then changed by a random exposure, contrast, gamma, colour cast,
blur, sensor noise and a reframing crop (zoom and shift, which moves `pixel_coords` with it; a
crop never cuts off an object's centre, so the scene graph stays true for the image).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

SIZES = ((160, 120), (224, 168), (320, 240))  # render sizes (4:3, like CLEVR), drawn uniformly
CROP_MARGIN = 0.06  # an object centre stays this fraction of the side inside a crop


def crop_box(rng: np.random.Generator, width: int, height: int, points: list[tuple[float, float]],
             min_scale: float = 0.85) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop of the same aspect keeping every point inside."""
    scale = float(rng.uniform(min_scale, 1.0))
    cw, ch = round(width * scale), round(height * scale)
    xs = [x for x, _ in points] or [width / 2]
    ys = [y for _, y in points] or [height / 2]
    mx, my = CROP_MARGIN * cw, CROP_MARGIN * ch
    lo_x, hi_x = max(0.0, max(xs) + mx - cw), min(width - cw, min(xs) - mx)
    lo_y, hi_y = max(0.0, max(ys) + my - ch), min(height - ch, min(ys) - my)
    if lo_x > hi_x or lo_y > hi_y:
        return 0, 0, width, height
    left, top = round(float(rng.uniform(lo_x, hi_x))), round(float(rng.uniform(lo_y, hi_y)))
    return left, top, left + cw, top + ch


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, gamma, colour cast and noise on an HxWx3 uint8 image."""
    x = img.astype(np.float32) / 255.0
    x = x * float(rng.uniform(0.75, 1.25))
    mean = x.mean()
    x = (x - mean) * float(rng.uniform(0.8, 1.2)) + mean
    x = np.clip(x, 0.0, 1.0) ** float(rng.uniform(0.8, 1.25))
    x = x * rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    x = x + rng.normal(0.0, float(rng.uniform(0.0, 0.025)), size=x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def augment(img: np.ndarray, scene: dict, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """(varied image, scene with `pixel_coords` moved to the varied image's frame)."""
    height, width = img.shape[:2]
    points = [(o["pixel_coords"][0], o["pixel_coords"][1]) for o in scene["objects"]]
    left, top, right, bottom = crop_box(rng, width, height, points)
    im = Image.fromarray(photometric(img, rng)).crop((left, top, right, bottom))
    im = im.resize((width, height), Image.Resampling.BICUBIC)
    if rng.random() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    sx, sy = width / (right - left), height / (bottom - top)
    objects = [{**o, "pixel_coords": [round((o["pixel_coords"][0] - left) * sx), round((o["pixel_coords"][1] - top) * sy),
                                      o["pixel_coords"][2]]} for o in scene["objects"]]
    return im, {**scene, "objects": objects}
