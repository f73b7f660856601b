"""A fast pure-numpy renderer for CLEVR scenes, and a pool renderer that writes PNGs.

The ray casts (primary hits, shadow rays) come from `raycast`; this module shades them: soft ground
shadows, contact darkening, Lambert and specular terms, one mirror bounce on metal, antialiased
silhouettes. The unshadowed ground is cached per resolution, so an image costs a few numpy passes over
the pixels the objects actually touch.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from trimpi.data.clevr import raycast as rc
from trimpi.data.clevr import scene as sc
from trimpi.errors import TrimpiError

SHADOW_BLUR = 2  # box radius (pixels) of the ground shadow blur, applied twice
AO_STRENGTH = 0.55


def _primitive(obj: dict, index: int) -> dict:
    """Geometry and material of one scene-graph object."""
    return {**rc.primitive(obj, index), "albedo": np.asarray(sc.COLORS[obj["color"]], np.float32) / 255.0,
            "metal": obj["material"] == "metal"}


@functools.lru_cache(maxsize=8)
def _frame(width: int, height: int) -> dict:
    """Per-resolution constants: camera rays, ground hit distance, the unshadowed ground radiance."""
    rays = rc.camera_rays(width, height)
    origin = rc.camera_basis()[0]  # float64, as the ground falloff has always been computed
    ground_xy = origin[None, None, :2] + rays["t_ground"][..., None] * rays["dirs"][..., :2]
    falloff = 1.0 / (1.0 + (np.linalg.norm(ground_xy, axis=2) / 14.0) ** 2)
    return {**rays, "ground_albedo": (rc.GROUND_ALBEDO * falloff).astype(np.float32),
            "lut": np.round(255 * np.linspace(0, 1, 4096) ** (1 / 2.2)).astype(np.uint8)}

def _box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, edges replicated (two 1-D cumulative-sum passes)."""
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float32)
        n = a.shape[axis]
        a = (np.take(c, np.arange(2 * r + 1, n + 2 * r + 1), axis) - np.take(c, np.arange(n), axis)) / (2 * r + 1)
    return a


def _soften(vis: np.ndarray, ground: np.ndarray) -> np.ndarray:
    """Soft shadows on the ground: blur visibility over ground pixels only (normalized convolution).

    Only the box around the shadowed pixels is blurred: elsewhere visibility is 1 and stays 1.
    """
    ys, xs = np.nonzero(vis < 1)
    if not len(ys):
        return vis
    m = 4 * SHADOW_BLUR + 2
    y0, y1, x0, x1 = max(ys.min() - m, 0), ys.max() + m + 1, max(xs.min() - m, 0), xs.max() + m + 1
    v, g = vis[y0:y1, x0:x1], ground[y0:y1, x0:x1]
    w = g.astype(np.float32)
    num, den = v * w, w
    for _ in range(2):
        num, den = _box_blur(num, SHADOW_BLUR), _box_blur(den, SHADOW_BLUR)
    out = vis.copy()
    out[y0:y1, x0:x1] = np.where(g, num / np.maximum(den, 1e-6), v)
    return out


def _occlusion(p: dict, pts: np.ndarray) -> np.ndarray:
    """Cosine-weighted solid angle of p's sphere of radius r seen from ground points (..., 3)."""
    q = p["c"] - pts
    d2 = np.maximum((q * q).sum(axis=-1), p["r"] ** 2)
    return (p["r"] ** 2 / d2) * (q[..., 2] / np.sqrt(d2))


def _ground_ao(prims, f, t_buf, ids, width, height) -> np.ndarray:
    """Contact darkening of the ground: cosine-weighted solid angle of each object's bounding sphere."""
    occ = np.zeros((height, width), np.float32)
    for p in prims:
        reach = np.array([3 * p["r"], 3 * p["r"], 0.0], np.float32)
        rect = rc.screen_rect(p["c"] - reach, p["c"] + reach * [1, 1, 0], width, height)
        if rect is None:
            continue
        y0, y1, x0, x1 = rect
        occ[y0:y1, x0:x1] += _occlusion(p, f["origin"] + t_buf[y0:y1, x0:x1, None] * f["dirs"][y0:y1, x0:x1])
    return np.where(ids < 0, np.clip(1 - AO_STRENGTH * occ, 0.3, 1), 1).astype(np.float32)


def _env(r: np.ndarray) -> np.ndarray:
    """Radiance seen along reflected directions that escape the scene: a gray studio backdrop."""
    up = np.clip(r[:, 2], 0.0, 1.0)
    return np.repeat((0.12 + 0.95 * up ** 0.5)[:, None], 3, axis=1)


def _lambert(n: np.ndarray, vis: list[np.ndarray] | None = None) -> np.ndarray:
    """Ambient (hemisphere) plus the lights' diffuse term at unit normals n, optionally shadowed."""
    out = rc.AMBIENT * (0.8 + 0.2 * n[:, 2])
    for i, (light, intensity, _) in enumerate(rc.lights()):
        term = intensity * np.maximum(n @ light, 0.0)
        out = out + (term * vis[i] if vis is not None else term)
    return out


def _reflection(prims, pts, d, n, k) -> np.ndarray:
    """One mirror bounce from metal surface points: other objects (unshadowed), ground, or backdrop."""
    r = (d - 2 * np.einsum("ij,ij->i", d, n)[:, None] * n).astype(np.float32)
    best = np.full(len(r), np.inf, np.float32)
    out = _env(r)
    down = r[:, 2] < -1e-4
    tg = np.where(down, -pts[:, 2] / np.where(down, r[:, 2], -1.0), np.inf)
    ground_light = rc.GROUND_ALBEDO * (rc.AMBIENT + sum(i * lt[2] for lt, i, _ in rc.lights()))
    gxy = pts[down, :2] + tg[down, None] * r[down, :2]
    gpts = np.concatenate([gxy, np.zeros((len(gxy), 1), np.float32)], axis=1)
    ao = np.clip(1 - AO_STRENGTH * sum(_occlusion(p, gpts) for p in prims), 0.3, 1)  # mirrored contact shadows
    out[down] = (ground_light * ao / (1.0 + (np.linalg.norm(gxy, axis=1) / 14.0) ** 2))[:, None]
    best = np.minimum(best, tg)
    for p in prims:
        oc = pts - p["c"]
        b = np.einsum("ij,ij->i", oc, r)
        cand = np.flatnonzero((k != p["index"]) & (b * b - np.einsum("ij,ij->i", oc, oc) + p["bound"] ** 2 > 0))
        if not len(cand):
            continue
        t = rc.intersect(p, pts[cand], r[cand])
        win = t < best[cand]
        if not win.any():
            continue
        sel = cand[win]
        best[sel] = t[win]
        hit_n = rc.normal(p, pts[sel] + t[win][:, None] * r[sel])
        out[sel] = p["albedo"] * _lambert(hit_n)[:, None]
    return out


def _shade_objects(prims, f, t_buf, ids, normals, masks) -> tuple[np.ndarray, np.ndarray]:
    """(flat pixel indices, linear RGB) of every object pixel."""
    idx = np.flatnonzero(ids.ravel() >= 0)
    k = ids.ravel()[idx].astype(np.int64)
    d = f["dirs"].reshape(-1, 3)[idx]
    n = normals.reshape(-1, 3)[idx]
    pts = f["origin"] + t_buf.ravel()[idx][:, None] * d
    albedo = np.stack([p["albedo"] for p in prims])[k]
    metal = np.array([p["metal"] for p in prims])[k]
    vis = [m.ravel()[idx] for m in masks]
    diffuse = _lambert(n, vis)
    col = albedo * diffuse[:, None]
    spec = np.zeros(len(idx), np.float32)
    power = np.where(metal, 90.0, 10.0).astype(np.float32)
    weight = np.where(metal, 1.1, 0.07).astype(np.float32)
    for i, (light, intensity, _) in enumerate(rc.lights()):
        h = light - d
        h /= np.linalg.norm(h, axis=1, keepdims=True)
        spec += intensity * vis[i] * np.maximum(np.einsum("ij,ij->i", n, h), 0.0) ** power
    spec *= weight
    m = np.flatnonzero(metal)
    if len(m):
        refl = _reflection(prims, pts[m], d[m], n[m], k[m])
        col[m] = albedo[m] * (0.15 * diffuse[m][:, None] + 0.95 * refl)
    tint = np.where(metal[:, None], 0.4 + 0.6 * albedo, 1.0)
    return idx, col + spec[:, None] * tint


def _antialias(img: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Soften object silhouettes: blend pixels on an object-id boundary with their 3x3 neighbourhood mean."""
    edge = np.zeros(ids.shape, bool)
    diff_x, diff_y = ids[:, 1:] != ids[:, :-1], ids[1:] != ids[:-1]
    edge[:, 1:] |= diff_x
    edge[:, :-1] |= diff_x
    edge[1:] |= diff_y
    edge[:-1] |= diff_y
    ys, xs = np.nonzero(edge)
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    acc = np.zeros((len(ys), 3), np.float32)
    for dy in range(3):
        for dx in range(3):
            acc += pad[ys + dy, xs + dx]
    img[ys, xs] = 0.5 * img[ys, xs] + 0.5 * acc / 9.0
    return img


def render_numpy(scene: dict, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene graph: (HxWx3 uint8 image, HxW int16 object-index buffer, -1 for the ground)."""
    f = _frame(width, height)
    prims = [_primitive(o, i) for i, o in enumerate(scene["objects"])]
    t_buf, ids, normals = rc.primary_hits(prims, f, width, height)
    masks = rc.shadow_masks(prims, f, t_buf, ids, width, height)
    ground = ids < 0
    light = np.full((height, width), rc.AMBIENT, np.float32)
    for (lt, intensity, casts), vis in zip(rc.lights(), masks):
        light += intensity * lt[2] * (_soften(vis, ground) if casts else vis)
    shade = f["ground_albedo"] * light * _ground_ao(prims, f, t_buf, ids, width, height)
    img = np.repeat(shade[..., None], 3, axis=2)
    idx, col = _shade_objects(prims, f, t_buf, ids, normals, masks)
    img.reshape(-1, 3)[idx] = col
    img = _antialias(img, ids)
    lut_idx = (np.clip(img, 0.0, 1.0) * 4095 + 0.5).astype(np.int32)
    return f["lut"][lut_idx], ids


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 uint8 image (no metadata, so equal pixels give equal bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _render_to_file(job: tuple[dict, str, int, int]) -> None:
    from trimpi.data.io import write_bytes_atomic

    scene, path, width, height = job
    write_bytes_atomic(path, encode_png(render_numpy(scene, width, height)[0]))


def render_pool(scenes: list[dict], paths: list[Path], width: int, height: int, renderer: str = "numpy",
                workers: int = 2, blender_python: str | None = None, progress: bool = True) -> None:
    """Render scenes to PNG files (atomic writes); the bytes do not depend on `workers`."""
    if len(scenes) != len(paths):
        raise TrimpiError(f"render_pool: {len(scenes)} scenes but {len(paths)} output paths")
    if renderer == "blender":
        from trimpi.data.clevr.blender_render import render_blender

        render_blender(scenes, paths, width, height, blender_python=blender_python, progress=progress)
        return
    if renderer != "numpy":
        raise TrimpiError(f"unknown renderer {renderer!r}: expected 'numpy' or 'blender'")
    from tqdm import tqdm

    jobs = [(s, str(p), width, height) for s, p in zip(scenes, paths)]
    with tqdm(total=len(jobs), desc="rendering", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                _render_to_file(job)
                bar.update()
            return
        from trimpi.data.workers import imap

        for _ in imap(_render_to_file, jobs, min(workers, len(jobs)), chunksize=4, ordered=False):
            bar.update()
