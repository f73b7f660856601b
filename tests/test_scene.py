"""CLEVR-style scene sampling: schema, counts, spacing, camera projection, determinism."""

from __future__ import annotations

import math

import numpy as np

from trimpi.data.clevr import scene as sc

W, H = 320, 240


def sample(seed: int, i: int = 0, **kw) -> dict:
    return sc.sample_scene(np.random.default_rng(seed), W, H, f"CLEVR_train_{i:06d}.png", i, "train", **kw)


def test_attribute_vocabulary_is_clevrs():
    assert sc.ATTRIBUTES["shape"] == ("cube", "sphere", "cylinder")
    assert set(sc.COLORS) == {"gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"}
    assert sc.COLORS["cyan"] == (41, 208, 208) and sc.SIZES == {"large": 0.7, "small": 0.35}
    assert sc.ATTRIBUTES["material"] == ("rubber", "metal")


def test_schema_counts_and_spacing():
    rng = np.random.default_rng(7)
    counts = set()
    for i in range(60):
        scene = sc.sample_scene(rng, W, H, f"img_{i}.png", i, "val")
        assert set(scene) == {"image_index", "image_filename", "split", "objects", "directions", "relationships"}
        assert scene["image_index"] == i and scene["split"] == "val" and scene["image_filename"] == f"img_{i}.png"
        objs = scene["objects"]
        counts.add(len(objs))
        assert 3 <= len(objs) <= 10
        for o in objs:
            assert set(o) == {"shape", "color", "size", "material", "3d_coords", "pixel_coords", "rotation"}
            for attr, values in sc.ATTRIBUTES.items():
                assert o[attr] in values
            x, y, z = o["3d_coords"]
            assert -3 <= x <= 3 and -3 <= y <= 3 and math.isclose(z, sc.object_radius(o))
            assert 0 <= o["rotation"] < 360 and len(o["pixel_coords"]) == 3 and o["pixel_coords"][2] > 0
        for a in range(len(objs)):
            for b in range(a + 1, len(objs)):
                (xa, ya, ra), (xb, yb, rb) = objs[a]["3d_coords"], objs[b]["3d_coords"]
                # CLEVR's test uses the unadjusted size of the later object; this bound holds for both.
                assert math.hypot(xa - xb, ya - yb) - ra - rb >= sc.MIN_DIST - 1e-9
        for name in ("left", "right", "front", "behind"):
            assert len(scene["relationships"][name]) == len(objs)
    assert len(counts) >= 5


def test_relationships_follow_directions():
    scene = sample(11)
    objs, rel = scene["objects"], scene["relationships"]
    for i, a in enumerate(objs):
        for j in rel["left"][i]:
            assert i in rel["right"][j]
            # "left" of the camera: smaller image x
            assert objs[j]["pixel_coords"][0] < a["pixel_coords"][0]
        for j in rel["behind"][i]:
            assert objs[j]["pixel_coords"][2] > a["pixel_coords"][2] - 0.5  # farther from the camera


def test_camera_sees_the_whole_placement_area():
    for x in (-3, 3):
        for y in (-3, 3):
            px, py, depth = sc.project([x, y, 0.0], W, H)
            assert 0 <= px < W and 0 <= py < H and depth > 0
    px, py, _ = sc.project([0, 0, 0], W, H)
    assert abs(px - W / 2) < 5 and abs(py - H / 2) < 5


def test_same_seed_same_scene_and_different_seed_differs():
    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_min_pixels_is_enforced():
    from trimpi.data.clevr.scene import visible_pixel_counts

    for seed in range(10):
        scene = sample(seed, min_pixels=400)
        assert visible_pixel_counts(scene["objects"], W, H).min() >= 400


def test_impossible_visibility_is_a_one_line_error():
    import pytest

    from trimpi.errors import ConfigError

    with pytest.raises(ConfigError, match="min_pixels"):
        sc.sample_scene(np.random.default_rng(0), 32, 24, "a.png", 0, "train", min_pixels=10_000)
    with pytest.raises(ConfigError):
        sample(0, min_objects=5, max_objects=4)
