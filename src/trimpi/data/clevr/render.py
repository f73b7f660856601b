"""A fast pure-numpy ray caster for CLEVR scenes, and a pool renderer that writes PNGs.

Geometry is analytic (spheres, z-rotated cubes, upright cylinders on the plane z=0) seen by CLEVR's camera.
Each object is intersected only inside its own screen-space bounding box, shadow rays only inside the
screen-space box of the object's shadow volume, and the unshadowed ground is cached per resolution, so an
image costs a few numpy passes over the pixels the objects actually touch.
"""

from __future__ import annotations

import functools
import io
import math
import multiprocessing as mp
from pathlib import Path

import numpy as np

from trimpi.data.clevr import scene as sc
from trimpi.errors import TrimpiError

EPS = 1e-3
# Lights: direction towards the light (CLEVR's key / fill / back lamp positions), intensity, casts a shadow.
LIGHTS = (
    ((6.4467, -2.9052, 4.2584), 0.95, True),
    ((-4.6712, -4.0136, 3.0112), 0.30, True),
    ((-1.1685, 2.6460, 5.8157), 0.30, False),
)
AMBIENT = 0.30
GROUND_ALBEDO = 0.50
SHADOW_BLUR = 2  # box radius (pixels) of the ground shadow blur, applied twice
AO_STRENGTH = 0.55
KINDS = {"sphere": 0, "cube": 1, "cylinder": 2}


@functools.lru_cache(maxsize=None)
def _lights() -> tuple[tuple[np.ndarray, float, bool], ...]:
    return tuple((np.asarray(d, np.float32) / np.float32(np.linalg.norm(d)), i, s) for d, i, s in LIGHTS)


def _primitive(obj: dict, index: int) -> dict:
    """Geometry and material of one scene-graph object."""
    r = sc.object_radius(obj)
    x, y = obj["3d_coords"][:2]
    bound = {"sphere": 1.0, "cube": math.sqrt(3.0), "cylinder": math.sqrt(2.0)}[obj["shape"]] * r
    theta = math.radians(float(obj.get("rotation", 0.0)))
    return {
        "index": index, "kind": KINDS[obj["shape"]], "c": np.array([x, y, r], np.float32), "r": r,
        "bound": bound, "cos": math.cos(theta), "sin": math.sin(theta),
        "albedo": np.asarray(sc.COLORS[obj["color"]], np.float32) / 255.0, "metal": obj["material"] == "metal",
    }


def _local(p: dict, v: np.ndarray) -> np.ndarray:
    """Rotate (N,3) vectors into the object's frame (by -rotation about z)."""
    ca, sa = p["cos"], p["sin"]
    return np.stack([ca * v[:, 0] + sa * v[:, 1], ca * v[:, 1] - sa * v[:, 0], v[:, 2]], axis=1)


def intersect(p: dict, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit (> EPS) of rays origin + t d with primitive p; inf where missed."""
    o = np.broadcast_to(origin - p["c"], d.shape)
    r = p["r"]
    if p["kind"] == 0:
        b = np.einsum("ij,ij->i", o, d)
        disc = b * b - (np.einsum("ij,ij->i", o, o) - r * r)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        return np.where((disc > 0) & (t > EPS), t, np.inf)
    if p["kind"] == 1:
        lo, ld = _local(p, o), _local(p, d)
        inv = 1.0 / np.where(np.abs(ld) < 1e-9, 1e-9, ld)
        t1, t2 = (-r - lo) * inv, (r - lo) * inv
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        tn = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
        tf = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
        return np.where((tf >= tn) & (tn > EPS), tn, np.inf)
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    ox, oy, oz = o[:, 0], o[:, 1], o[:, 2]
    a = np.maximum(dx * dx + dy * dy, 1e-12)
    b = ox * dx + oy * dy
    disc = b * b - a * (ox * ox + oy * oy - r * r)
    ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    side = (disc > 0) & (ts > EPS) & (np.abs(oz + ts * dz) <= r)
    dz_safe = np.where(np.abs(dz) < 1e-9, 1e-9, dz)
    tc = (np.where(dz < 0, r, -r) - oz) / dz_safe
    cx, cy = ox + tc * dx, oy + tc * dy
    cap = (tc > EPS) & (cx * cx + cy * cy <= r * r)
    return np.minimum(np.where(side, ts, np.inf), np.where(cap, tc, np.inf))


def normal(p: dict, points: np.ndarray) -> np.ndarray:
    """Outward unit normals of primitive p at (N,3) surface points."""
    q = points - p["c"]
    r = p["r"]
    if p["kind"] == 0:
        return q / r
    if p["kind"] == 1:
        lq = _local(p, q)
        axis = np.abs(lq).argmax(axis=1)
        n = np.zeros_like(lq)
        n[np.arange(len(lq)), axis] = np.sign(lq[np.arange(len(lq)), axis])
        ca, sa = p["cos"], p["sin"]
        return np.stack([ca * n[:, 0] - sa * n[:, 1], sa * n[:, 0] + ca * n[:, 1], n[:, 2]], axis=1)
    radial = np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2)
    on_cap = np.abs(q[:, 2]) / r > radial / r
    side = np.stack([q[:, 0] / np.maximum(radial, 1e-9), q[:, 1] / np.maximum(radial, 1e-9), 0 * radial], axis=1)
    cap = np.stack([0 * radial, 0 * radial, np.sign(q[:, 2])], axis=1)
    return np.where(on_cap[:, None], cap, side).astype(np.float32)


def _project(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N,3) world points -> (N,2) continuous pixel positions."""
    origin, right, up, forward = sc.camera_basis()
    d = points - origin
    depth = d @ forward
    sx, sy = sc.half_extents(width, height)
    return np.stack([(d @ right / (depth * sx) + 1) / 2 * width, (1 - d @ up / (depth * sy)) / 2 * height], 1)


def _rect(lo: np.ndarray, hi: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Screen rectangle (y0, y1, x0, x1) covering the world box [lo, hi]; None when off screen."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    xy = _project(corners, width, height)
    x0, y0 = np.floor(xy.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(xy.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (y0, y1, x0, x1) if x0 < x1 and y0 < y1 else None


@functools.lru_cache(maxsize=8)
def _frame(width: int, height: int) -> dict:
    """Per-resolution constants: camera rays, ground hit distance, the unshadowed ground radiance."""
    origin, right, up, forward = sc.camera_basis()
    sx, sy = sc.half_extents(width, height)
    u = ((np.arange(width) + 0.5) / width * 2 - 1) * sx
    v = (1 - (np.arange(height) + 0.5) / height * 2) * sy
    d = forward[None, None] + u[None, :, None] * right[None, None] + v[:, None, None] * up[None, None]
    d = (d / np.linalg.norm(d, axis=2, keepdims=True)).astype(np.float32)
    t_ground = (-origin[2] / np.minimum(d[..., 2], -1e-6)).astype(np.float32)
    ground_xy = origin[None, None, :2] + t_ground[..., None] * d[..., :2]
    falloff = 1.0 / (1.0 + (np.linalg.norm(ground_xy, axis=2) / 14.0) ** 2)
    return {"origin": origin.astype(np.float32), "dirs": d, "t_ground": t_ground,
            "ground_albedo": (GROUND_ALBEDO * falloff).astype(np.float32),
            "lut": np.round(255 * np.linspace(0, 1, 4096) ** (1 / 2.2)).astype(np.uint8)}


def _primary(prims: list[dict], f: dict, width: int, height: int):
    """Closest hits: (t, object id with -1 for ground, normals) over the image."""
    t_buf = f["t_ground"].copy()
    ids = np.full((height, width), -1, np.int16)
    normals = np.zeros((height, width, 3), np.float32)
    normals[..., 2] = 1.0
    for p in prims:
        rect = _rect(p["c"] - p["bound"], p["c"] + p["bound"], width, height)
        if rect is None:
            continue
        y0, y1, x0, x1 = rect
        d = f["dirs"][y0:y1, x0:x1].reshape(-1, 3)
        t = intersect(p, f["origin"], d).reshape(y1 - y0, x1 - x0)
        closer = t < t_buf[y0:y1, x0:x1]
        if not closer.any():
            continue
        t_buf[y0:y1, x0:x1][closer] = t[closer]
        ids[y0:y1, x0:x1][closer] = p["index"]
        hits = f["origin"] + t[closer][:, None] * d[closer.ravel()]
        normals[y0:y1, x0:x1][closer] = normal(p, hits)
    return t_buf, ids, normals


def object_id_buffer(scene: dict, width: int, height: int) -> np.ndarray:
    """HxW int16 buffer: index of the object seen at each pixel, -1 for the ground."""
    prims = [_primitive(o, i) for i, o in enumerate(scene["objects"])]
    return _primary(prims, _frame(width, height), width, height)[1]


def _shadow_masks(prims, f, t_buf, ids, width, height) -> list[np.ndarray]:
    """Per light, HxW visibility (1 lit, 0 shadowed) from every other object."""
    masks = []
    for light, _, casts in _lights():
        vis = np.ones((height, width), np.float32)
        for p in prims if casts else ():
            top, ground = p["c"], p["c"] - light * (p["c"][2] / light[2])
            reach = p["bound"] / light[2]  # the shadow of the bounding sphere is an ellipse this long
            lo = np.maximum(np.minimum(top, ground) - reach, [-1e9, -1e9, 0.0])
            rect = _rect(lo, np.maximum(top, ground) + reach, width, height)
            if rect is None:
                continue
            y0, y1, x0, x1 = rect
            sel = ids[y0:y1, x0:x1] != p["index"]
            pts = f["origin"] + (t_buf[y0:y1, x0:x1][sel])[:, None] * f["dirs"][y0:y1, x0:x1][sel]
            hit = np.isfinite(intersect(p, pts, np.broadcast_to(light, pts.shape)))
            vis[y0:y1, x0:x1][sel] *= ~hit
        masks.append(vis)
    return masks


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
        rect = _rect(p["c"] - reach, p["c"] + reach * [1, 1, 0], width, height)
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
    out = AMBIENT * (0.8 + 0.2 * n[:, 2])
    for i, (light, intensity, _) in enumerate(_lights()):
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
    ground_light = GROUND_ALBEDO * (AMBIENT + sum(i * lt[2] for lt, i, _ in _lights()))
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
        t = intersect(p, pts[cand], r[cand])
        win = t < best[cand]
        if not win.any():
            continue
        sel = cand[win]
        best[sel] = t[win]
        hit_n = normal(p, pts[sel] + t[win][:, None] * r[sel])
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
    for i, (light, intensity, _) in enumerate(_lights()):
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
    t_buf, ids, normals = _primary(prims, f, width, height)
    masks = _shadow_masks(prims, f, t_buf, ids, width, height)
    ground = ids < 0
    light = np.full((height, width), AMBIENT, np.float32)
    for (lt, intensity, casts), vis in zip(_lights(), masks):
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
        # spawn, not fork: the caller may hold threads (torch, tokenizers) that fork would copy mid-state.
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(_render_to_file, jobs, chunksize=4):
                bar.update()
