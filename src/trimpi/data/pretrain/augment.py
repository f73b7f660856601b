"""Rendering variety for pretraining images, applied after the numpy renderer (which stays untouched).

The evaluation images may come from Blender or from a CLEVR v1.0 release, whose lighting, colour
balance, noise and framing differ from the numpy renderer's: CLEVR v1.0 renders are much darker
(mean pixel 118 against 174 for ours) and show objects about twice as large. Each pretraining image
is therefore rendered at a random size and then changed by a random floor brightness and tint, an
exposure from dark to bright, contrast, gamma, colour cast, blur, sensor noise and a reframing crop
(zoom up to 2× and shift, which moves `pixel_coords` with it; a crop never cuts off an object's
centre, so the scene graph stays true for the image).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

SIZES = ((160, 120), (224, 168), (320, 240))  # render sizes (4:3, like CLEVR), drawn uniformly
CROP_MARGIN = 0.06  # an object centre stays this fraction of the side inside a crop
MIN_SCALE = 0.5  # the tightest crop (a 2× zoom), where the objects' spread allows it


def crop_box(rng: np.random.Generator, width: int, height: int, points: list[tuple[float, float]],
             min_scale: float = MIN_SCALE) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop of the same aspect keeping every point inside.

    The scale is drawn between the tightest crop that can hold every point (and `min_scale`) and 1."""
    xs = [x for x, _ in points] or [width / 2]
    ys = [y for _, y in points] or [height / 2]
    fit = max((max(xs) - min(xs)) / (width * (1 - 2 * CROP_MARGIN)),
              (max(ys) - min(ys)) / (height * (1 - 2 * CROP_MARGIN)))
    scale = float(rng.uniform(min(1.0, max(min_scale, fit)), 1.0))
    cw, ch = round(width * scale), round(height * scale)
    mx, my = CROP_MARGIN * cw, CROP_MARGIN * ch
    lo_x, hi_x = max(0.0, max(xs) + mx - cw), min(width - cw, min(xs) - mx)
    lo_y, hi_y = max(0.0, max(ys) + my - ch), min(height - ch, min(ys) - my)
    if lo_x > hi_x or lo_y > hi_y:
        return 0, 0, width, height
    left, top = round(float(rng.uniform(lo_x, hi_x))), round(float(rng.uniform(lo_y, hi_y)))
    return left, top, left + cw, top + ch


def photometric(img: np.ndarray, rng: np.random.Generator, ground: np.ndarray | None = None) -> np.ndarray:
    """Floor brightness and tint (where `ground`, an HxW mask, is true), exposure (log-uniform in
    0.5-1.25), contrast, gamma, colour cast and noise on an HxWx3 uint8 image."""
    x = img.astype(np.float32) / 255.0
    if ground is not None:
        floor = float(rng.uniform(0.5, 1.1)) * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
        x = np.where(ground[..., None], x * floor, x)
    x = x * float(np.exp(rng.uniform(np.log(0.5), np.log(1.25))))
    mean = x.mean()
    x = (x - mean) * float(rng.uniform(0.8, 1.2)) + mean
    x = np.clip(x, 0.0, 1.0) ** float(rng.uniform(0.8, 1.25))
    x = x * rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    x = x + rng.normal(0.0, float(rng.uniform(0.0, 0.025)), size=x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def augment(img: np.ndarray, scene: dict, rng: np.random.Generator,
            ground: np.ndarray | None = None) -> tuple[Image.Image, dict]:
    """(varied image, scene with `pixel_coords` moved to the varied image's frame); ground: the
    renderer's HxW floor mask, if it gave one."""
    height, width = img.shape[:2]
    points = [(o["pixel_coords"][0], o["pixel_coords"][1]) for o in scene["objects"]]
    left, top, right, bottom = crop_box(rng, width, height, points)
    im = Image.fromarray(photometric(img, rng, ground)).crop((left, top, right, bottom))
    im = im.resize((width, height), Image.Resampling.BICUBIC)
    if rng.random() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    sx, sy = width / (right - left), height / (bottom - top)
    objects = [{**o, "pixel_coords": [round((o["pixel_coords"][0] - left) * sx), round((o["pixel_coords"][1] - top) * sy),
                                      o["pixel_coords"][2]]} for o in scene["objects"]]
    return im, {**scene, "objects": objects}
