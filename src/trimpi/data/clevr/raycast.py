"""CLEVR's stage and visibility: the camera, the lights, object geometry, and the ray casts both renderers share.

Geometry is analytic (spheres, z-rotated cubes, upright cylinders on the plane z=0) seen by CLEVR's camera.
Each object is intersected only inside its own screen-space bounding box and shadow rays only inside the
screen-space box of the object's shadow volume. Below `scene` (which checks visibility with
`object_id_buffer`), `render` (which shades the hits) and `blender_render` (which sends the same stage to
Blender); it imports none of them.
"""

from __future__ import annotations

import functools
import math

import numpy as np

SIZES: dict[str, float] = {"large": 0.7, "small": 0.35}

# CLEVR's camera (Blender's default camera of base_scene.blend): location, XYZ Euler angles, 35 mm lens on
# a 32 mm sensor fitted horizontally.
CAMERA_LOCATION = (7.3589, -6.9258, 4.9583)
CAMERA_ROTATION_DEG = (63.559, 0.0, 46.692)
CAMERA_LENS_MM = 35.0
CAMERA_SENSOR_MM = 32.0


def camera_basis() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(origin, right, up, forward) of the camera in world coordinates (z up)."""
    ax, _, az = (math.radians(a) for a in CAMERA_ROTATION_DEG)
    right = np.array([math.cos(az), math.sin(az), 0.0])
    up = np.array([-math.cos(ax) * math.sin(az), math.cos(ax) * math.cos(az), math.sin(ax)])
    forward = np.array([-math.sin(ax) * math.sin(az), math.sin(ax) * math.cos(az), -math.cos(ax)])
    return np.array(CAMERA_LOCATION), right, up, forward


def half_extents(width: int, height: int) -> tuple[float, float]:
    """Image-plane half width and half height at unit distance (sensor fitted to the width)."""
    sx = CAMERA_SENSOR_MM / 2.0 / CAMERA_LENS_MM
    return sx, sx * height / width


def project(point, width: int, height: int) -> tuple[float, float, float]:
    """World point -> (x, y, depth): pixel position (origin top-left, continuous) and view depth."""
    origin, right, up, forward = camera_basis()
    d = np.asarray(point, dtype=float) - origin
    depth = float(d @ forward)
    sx, sy = half_extents(width, height)
    u = (d @ right) / (depth * sx)
    v = (d @ up) / (depth * sy)
    return (u + 1.0) / 2.0 * width, (1.0 - v) / 2.0 * height, depth


def object_radius(obj: dict) -> float:
    """The primitive's scale r: sphere radius; cylinder radius and half height; cube half side (CLEVR's r/sqrt2)."""
    r = SIZES[obj["size"]]
    return r / math.sqrt(2.0) if obj["shape"] == "cube" else r


EPS = 1e-3
# Lights: direction towards the light (CLEVR's key / fill / back lamp positions), intensity, casts a shadow.
LIGHTS = (
    ((6.4467, -2.9052, 4.2584), 0.95, True),
    ((-4.6712, -4.0136, 3.0112), 0.30, True),
    ((-1.1685, 2.6460, 5.8157), 0.30, False),
)
AMBIENT = 0.30
GROUND_ALBEDO = 0.50
KINDS = {"sphere": 0, "cube": 1, "cylinder": 2}


@functools.cache
def lights() -> tuple[tuple[np.ndarray, float, bool], ...]:
    return tuple((np.asarray(d, np.float32) / np.float32(np.linalg.norm(d)), i, s) for d, i, s in LIGHTS)


def primitive(obj: dict, index: int) -> dict:
    """Geometry of one scene-graph object: kind, centre c, scale r, bounding radius, rotation about z."""
    r = object_radius(obj)
    x, y = obj["3d_coords"][:2]
    bound = {"sphere": 1.0, "cube": math.sqrt(3.0), "cylinder": math.sqrt(2.0)}[obj["shape"]] * r
    theta = math.radians(float(obj.get("rotation", 0.0)))
    return {
        "index": index, "kind": KINDS[obj["shape"]], "c": np.array([x, y, r], np.float32), "r": r,
        "bound": bound, "cos": math.cos(theta), "sin": math.sin(theta),
    }


@functools.lru_cache(maxsize=8)
def camera_rays(width: int, height: int) -> dict:
    """Per-resolution camera rays: origin, unit directions (H, W, 3) and the ground hit distance (H, W)."""
    origin, right, up, forward = camera_basis()
    sx, sy = half_extents(width, height)
    u = ((np.arange(width) + 0.5) / width * 2 - 1) * sx
    v = (1 - (np.arange(height) + 0.5) / height * 2) * sy
    d = forward[None, None] + u[None, :, None] * right[None, None] + v[:, None, None] * up[None, None]
    d = (d / np.linalg.norm(d, axis=2, keepdims=True)).astype(np.float32)
    t_ground = (-origin[2] / np.minimum(d[..., 2], -1e-6)).astype(np.float32)
    return {"origin": origin.astype(np.float32), "dirs": d, "t_ground": t_ground}


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


def project_points(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N,3) world points -> (N,2) continuous pixel positions."""
    origin, right, up, forward = camera_basis()
    d = points - origin
    depth = d @ forward
    sx, sy = half_extents(width, height)
    return np.stack([(d @ right / (depth * sx) + 1) / 2 * width, (1 - d @ up / (depth * sy)) / 2 * height], 1)


def screen_rect(lo: np.ndarray, hi: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Screen rectangle (y0, y1, x0, x1) covering the world box [lo, hi]; None when off screen."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    xy = project_points(corners, width, height)
    x0, y0 = np.floor(xy.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(xy.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (y0, y1, x0, x1) if x0 < x1 and y0 < y1 else None


def primary_hits(prims: list[dict], f: dict, width: int, height: int):
    """Closest hits: (t, object id with -1 for ground, normals) over the image."""
    t_buf = f["t_ground"].copy()
    ids = np.full((height, width), -1, np.int16)
    normals = np.zeros((height, width, 3), np.float32)
    normals[..., 2] = 1.0
    for p in prims:
        rect = screen_rect(p["c"] - p["bound"], p["c"] + p["bound"], width, height)
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
    prims = [primitive(o, i) for i, o in enumerate(scene["objects"])]
    return primary_hits(prims, camera_rays(width, height), width, height)[1]


def shadow_masks(prims, f, t_buf, ids, width, height) -> list[np.ndarray]:
    """Per light, HxW visibility (1 lit, 0 shadowed) from every other object."""
    masks = []
    for light, _, casts in lights():
        vis = np.ones((height, width), np.float32)
        for p in prims if casts else ():
            top, ground = p["c"], p["c"] - light * (p["c"][2] / light[2])
            reach = p["bound"] / light[2]  # the shadow of the bounding sphere is an ellipse this long
            lo = np.maximum(np.minimum(top, ground) - reach, [-1e9, -1e9, 0.0])
            rect = screen_rect(lo, np.maximum(top, ground) + reach, width, height)
            if rect is None:
                continue
            y0, y1, x0, x1 = rect
            sel = ids[y0:y1, x0:x1] != p["index"]
            pts = f["origin"] + (t_buf[y0:y1, x0:x1][sel])[:, None] * f["dirs"][y0:y1, x0:x1][sel]
            hit = np.isfinite(intersect(p, pts, np.broadcast_to(light, pts.shape)))
            vis[y0:y1, x0:x1][sel] *= ~hit
        masks.append(vis)
    return masks
