"""CLEVR-style scene sampling: attributes and scene graphs in CLEVR v1.0's JSON schema.

The camera, object sizes and the object-id buffer come from `raycast` (shared with the renderers).

Sampling follows CLEVR's `render_images.py`: positions uniform in [-3, 3]^2, a minimum gap between objects
(`MIN_DIST`), a minimum left/right/front/behind margin (`MARGIN`), a whole-scene restart after too many
failed placements, and a visibility check on the renderer's object-id buffer.
"""

from __future__ import annotations

import math

import numpy as np

from trimpi.data.clevr.raycast import SIZES, camera_basis, object_id_buffer, object_radius, project
from trimpi.errors import ConfigError

SHAPES = ("cube", "sphere", "cylinder")
COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
MATERIALS = ("rubber", "metal")
ATTRIBUTES = {"shape": SHAPES, "color": tuple(COLORS), "size": tuple(SIZES), "material": MATERIALS}

MIN_DIST = 0.25  # CLEVR --min_dist
MARGIN = 0.4  # CLEVR --margin
MAX_RETRIES = 50  # CLEVR --max_retries
MAX_SCENE_ATTEMPTS = 2000  # whole-scene restarts before giving up (CLEVR retries forever)
EXTENT = 3.0  # objects are placed in [-EXTENT, EXTENT]^2


def pixel_coords(point, width: int, height: int) -> list:
    """CLEVR's `pixel_coords`: [round(x), round(y), depth] of a world point."""
    x, y, depth = project(point, width, height)
    return [int(round(x)), int(round(y)), depth]


def directions() -> dict[str, list[float]]:
    """CLEVR's `directions`: the camera's axes projected onto the ground plane, plus up/down."""
    _, right, _, forward = camera_basis()
    behind = np.array([forward[0], forward[1], 0.0])
    behind /= np.linalg.norm(behind)
    left = -right
    as_list = lambda v: [float(c) for c in v]  # noqa: E731
    return {
        "behind": as_list(behind), "front": as_list(-behind), "left": as_list(left), "right": as_list(-left),
        "above": [0.0, 0.0, 1.0], "below": [0.0, 0.0, -1.0],
    }


def relationships(objects: list[dict], dirs: dict[str, list[float]], eps: float = 0.2) -> dict[str, list]:
    """CLEVR's `relationships`: for each direction and object i, the sorted ids j with (c_j - c_i) . dir > eps."""
    out: dict[str, list] = {}
    coords = np.array([o["3d_coords"] for o in objects], dtype=float).reshape(-1, 3)
    for name in ("left", "right", "front", "behind"):
        proj = coords @ np.asarray(dirs[name])
        out[name] = [[j for j in range(len(objects)) if j != i and proj[j] - proj[i] > eps]
                     for i in range(len(objects))]
    return out


def _placement_ok(x: float, y: float, r: float, placed: list[tuple[float, float, float]],
                  dirs: dict[str, list[float]]) -> bool:
    """CLEVR's test: gap >= MIN_DIST to every placed object and no directional margin in (0, MARGIN)."""
    for xx, yy, rr in placed:
        dx, dy = x - xx, y - yy
        if math.hypot(dx, dy) - r - rr < MIN_DIST:
            return False
        for name in ("left", "right", "front", "behind"):
            margin = dx * dirs[name][0] + dy * dirs[name][1]
            if 0.0 < margin < MARGIN:
                return False
    return True


def _try_layout(rng: np.random.Generator, count: int, dirs: dict[str, list[float]]) -> list[dict] | None:
    """Place `count` random objects CLEVR's way; None when one placement fails MAX_RETRIES times."""
    placed: list[tuple[float, float, float]] = []
    objects = []
    for _ in range(count):
        size = str(rng.choice(list(SIZES)))
        for _try in range(MAX_RETRIES):
            x, y = (float(v) for v in rng.uniform(-EXTENT, EXTENT, size=2))
            if _placement_ok(x, y, SIZES[size], placed, dirs):
                break
        else:
            return None
        obj = {"shape": str(rng.choice(SHAPES)), "color": str(rng.choice(list(COLORS))), "size": size}
        r = object_radius(obj)
        obj["rotation"] = float(360.0 * rng.random())
        obj["material"] = str(rng.choice(MATERIALS))
        obj["3d_coords"] = [x, y, r]
        placed.append((x, y, r))
        objects.append(obj)
    return objects


def visible_pixel_counts(objects: list[dict], width: int, height: int) -> np.ndarray:
    """Visible pixels of each object in the renderer's object-id buffer at width x height."""
    ids = object_id_buffer({"objects": objects}, width, height)
    return np.bincount(ids[ids >= 0].ravel().astype(np.int64), minlength=len(objects))


def sample_scene(rng: np.random.Generator, width: int, height: int, image_filename: str, image_index: int,
                 split: str, min_objects: int = 3, max_objects: int = 10, min_pixels: int = 100) -> dict:
    """Sample one CLEVR scene graph (3-10 objects, no overlaps, each object visible by >= min_pixels).

    `min_pixels` counts pixels at width x height (CLEVR uses 200 at 480x320; 100 at 320x240 is the same
    fraction of the image). Deterministic given the generator's state.
    """
    if not 1 <= min_objects <= max_objects:
        raise ConfigError(f"object count range {min_objects}..{max_objects} is empty")
    dirs = directions()
    count = int(rng.integers(min_objects, max_objects + 1))  # kept across restarts, as CLEVR does
    for _attempt in range(MAX_SCENE_ATTEMPTS):
        objects = _try_layout(rng, count, dirs)
        if objects is not None and visible_pixel_counts(objects, width, height).min() >= min_pixels:
            break
    else:
        raise ConfigError(f"no layout of {count} objects leaves each visible by {min_pixels} pixels at "
                          f"{width}x{height} after {MAX_SCENE_ATTEMPTS} tries: lower min_pixels or the count")
    for obj in objects:
        obj["pixel_coords"] = pixel_coords(obj["3d_coords"], width, height)
    return {
        "image_index": image_index, "image_filename": image_filename, "split": split,
        "objects": objects, "directions": dirs, "relationships": relationships(objects, dirs),
    }
