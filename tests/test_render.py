"""The numpy renderer agrees with the scene graph: colours, object-id buffer, determinism, speed, PNG pools."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from trimpi.data.clevr.render import encode_png, render_numpy, render_pool
from trimpi.data.clevr.scene import COLORS, sample_scene
from trimpi.errors import TrimpiError

W, H = 320, 240
CHROMATIC = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in COLORS.items() if name != "gray"}


def scenes(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, W, H, f"CLEVR_test_{i:06d}.png", i, "test") for i in range(n)]


def interior(ids: np.ndarray, k: int) -> np.ndarray:
    """Pixels of object k whose 4 neighbours are also object k (no anti-aliased silhouette pixels)."""
    m = ids == k
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return inner


def classify(rgb: np.ndarray) -> str:
    """Colour name of a median pixel: gray by low saturation, otherwise the nearest CLEVR hue."""
    h, s, _ = colorsys.rgb_to_hsv(*(rgb / 255))
    if s < 0.25:
        return "gray"
    dist = {name: min(abs(h - ref), 1 - abs(h - ref)) for name, ref in CHROMATIC.items()}
    return min(dist, key=dist.get)


def object_colour(img: np.ndarray, ids: np.ndarray, k: int, xy: list, radius: int = 8) -> np.ndarray | None:
    """Median colour of object k's interior pixels within `radius` of its pixel_coords."""
    x, y = xy[:2]
    win = np.zeros_like(ids, bool)
    win[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1] = True
    sel = interior(ids, k) & win
    if sel.sum() < 5:
        sel = interior(ids, k)
    return np.median(img[sel].astype(float), axis=0) if sel.any() else None


def test_rendered_colour_matches_scene_graph():
    checked = 0
    for scene in scenes(40):
        img, ids = render_numpy(scene, W, H)
        for k, obj in enumerate(scene["objects"]):
            rgb = object_colour(img, ids, k, obj["pixel_coords"])
            assert rgb is not None, f"object {k} has no interior pixels"
            assert classify(rgb) == obj["color"], (scene["image_index"], k, obj, rgb)
            checked += 1
    assert checked > 150


def test_brown_is_darker_than_yellow_and_less_red_than_red():
    def hsv(color: str, material: str = "rubber"):
        scene = {"objects": [{"shape": "cube", "size": "large", "color": color, "material": material,
                              "3d_coords": [0.0, 0.0, 0.495], "rotation": 20.0}]}
        img, ids = render_numpy(scene, W, H)
        return colorsys.rgb_to_hsv(*(np.median(img[interior(ids, 0)], axis=0) / 255))

    brown, yellow, red = hsv("brown"), hsv("yellow"), hsv("red")
    assert brown[2] < yellow[2] - 0.15
    assert 0.05 < brown[0] < 0.12
    assert red[0] < 0.03 or red[0] > 0.97


def test_object_id_buffer_matches_pixel_coords_and_min_pixels():
    on_object = total = 0
    for scene in scenes(30, seed=1):
        _, ids = render_numpy(scene, W, H)
        counts = np.bincount(ids[ids >= 0].astype(int), minlength=len(scene["objects"]))
        assert counts.min() >= 100
        for k, obj in enumerate(scene["objects"]):
            x, y = obj["pixel_coords"][:2]
            ys, xs = np.nonzero(ids == k)
            assert np.hypot(xs - x, ys - y).min() <= 12, (k, obj)  # occluded centres are still close
            total += 1
            on_object += 0 <= x < W and 0 <= y < H and ids[y, x] == k
    assert on_object / total > 0.85


def test_metal_is_shinier_than_rubber_and_sizes_differ():
    def render(material: str, size: str = "large"):
        r = {"large": 0.7, "small": 0.35}[size]
        scene = {"objects": [{"shape": "sphere", "size": size, "color": "blue", "material": material,
                              "3d_coords": [0.0, 0.0, r], "rotation": 0.0}]}
        return render_numpy(scene, W, H)

    rub, ids = render("rubber")
    met, _ = render("metal")
    lum = lambda img: img[interior(ids, 0)].astype(float).mean(axis=1)  # noqa: E731
    assert lum(met).max() > 230 > lum(rub).max()  # a specular highlight only on metal
    assert (render("rubber", "small")[1] == 0).sum() * 3 < (ids == 0).sum()


def test_render_is_deterministic():
    batch = scenes(10, seed=2)
    a = [encode_png(render_numpy(s, W, H)[0]) for s in batch]
    b = [encode_png(render_numpy(s, W, H)[0]) for s in batch]
    assert a == b


def test_render_pool_writes_same_bytes_for_any_worker_count(tmp_path):
    batch = scenes(6, seed=3)
    one = [tmp_path / "one" / s["image_filename"] for s in batch]
    two = [tmp_path / "two" / s["image_filename"] for s in batch]
    render_pool(batch, one, W, H, workers=1, progress=False)
    render_pool(batch, two, W, H, workers=2, progress=False)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    assert one[0].read_bytes() == encode_png(render_numpy(batch[0], W, H)[0])
    assert not list((tmp_path / "one").glob(".*"))  # no temporary files left behind


def test_render_pool_rejects_bad_input(tmp_path):
    with pytest.raises(TrimpiError):
        render_pool(scenes(1), [], W, H, progress=False)
    with pytest.raises(TrimpiError):
        render_pool(scenes(1), [tmp_path / "a.png"], W, H, renderer="povray", progress=False)


def test_attribute_crops_are_deterministic_and_show_the_value():
    from trimpi.data.clevr.crops import render_attribute_crop
    from trimpi.errors import DataError

    a = render_attribute_crop("color", "red", 48)
    assert a.size == (48, 48) and a.mode == "RGB"
    assert a.tobytes() == render_attribute_crop("color", "red", 48).tobytes()
    centre = np.asarray(a)[18:30, 18:30].reshape(-1, 3).astype(float)
    assert classify(np.median(centre, axis=0)) == "red"
    shapes = {v: np.asarray(render_attribute_crop("shape", v)) for v in ("cube", "sphere", "cylinder")}
    assert len({s.tobytes() for s in shapes.values()}) == 3
    rubber, metal = (np.asarray(render_attribute_crop("material", v)).astype(float) for v in ("rubber", "metal"))
    assert metal.std() > rubber.std()  # reflections and a highlight make metal more contrasted
    for bad in (("size", "large"), ("color", "pink"), ("texture", "wood")):
        with pytest.raises(DataError):
            render_attribute_crop(*bad)


def test_blender_backend_missing_interpreter_is_one_line_error(tmp_path):
    with pytest.raises(TrimpiError, match="pip install bpy==5.0.1"):
        render_pool(scenes(1), [tmp_path / "a.png"], W, H, renderer="blender",
                    blender_python=str(tmp_path / "nope" / "python"), progress=False)


@pytest.mark.slow
def test_blender_backend_renders_the_same_layout(tmp_path):
    from trimpi.data.clevr.blender_render import default_blender_python

    if default_blender_python() is None:
        pytest.skip("no .venv-blender/bin/python (make .venv-blender/.installed)")
    from PIL import Image

    scene = scenes(1, seed=5)[0]
    render_pool([scene], [tmp_path / "b.png"], W, H, renderer="blender", progress=False)
    img = np.asarray(Image.open(tmp_path / "b.png").convert("RGB"))
    assert img.shape == (H, W, 3)
    _, ids = render_numpy(scene, W, H)
    # Same camera and geometry: the objects' colours appear where the numpy renderer puts them.
    for k, obj in enumerate(scene["objects"]):
        sel = interior(ids, k)
        if sel.sum() >= 30 and obj["material"] == "rubber":
            assert classify(np.median(img[sel].astype(float), axis=0)) == obj["color"], obj
    assert not list(tmp_path.glob(".*"))
