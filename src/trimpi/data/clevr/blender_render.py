"""The optional Blender backend: Cycles (CPU, 16 samples, denoised) in a separate interpreter.

bpy pins numpy<2, so it lives in its own environment (`make .venv-blender/.installed`, i.e.
`python3 -m venv .venv-blender && .venv-blender/bin/pip install bpy==5.0.1`). This module writes a JSON
job with the same camera, lights and geometry as the numpy renderer and runs `_bpy_script.py` under that
interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from trimpi.data.clevr import raycast as rc
from trimpi.data.clevr import scene as sc
from trimpi.errors import TrimpiError

SAMPLES = 16
SUN_SCALE = 2.6  # Cycles sun strength per unit of the numpy renderer's light intensity (matched by eye)
SCRIPT = Path(__file__).with_name("_bpy_script.py")
INSTALL_HINT = "python3 -m venv .venv-blender && .venv-blender/bin/pip install bpy==5.0.1"


def default_blender_python() -> Path | None:
    """`.venv-blender/bin/python` in the working directory or the source checkout, if present."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[4]):
        candidate = root / ".venv-blender" / "bin" / "python"
        if candidate.exists():
            return candidate
    return None


def resolve_blender_python(blender_python: str | None) -> str:
    """The interpreter to run bpy with; a one-line TrimpiError saying how to install it when missing."""
    path = Path(blender_python) if blender_python else default_blender_python()
    if path is None or not path.exists():
        where = f"{blender_python} not found" if blender_python else "no .venv-blender/bin/python"
        raise TrimpiError(f"the Blender renderer needs bpy ({where}): install it with `{INSTALL_HINT}`")
    return str(path)


def scene_job(scene: dict, path: Path) -> dict:
    """One image of a job: output path and the objects as primitives (linear RGB, CLEVR's r)."""
    objects = []
    for obj in scene["objects"]:
        x, y = obj["3d_coords"][:2]
        r = rc.object_radius(obj)
        objects.append({"kind": obj["shape"], "center": [x, y, r], "r": r, "rotation": float(obj["rotation"]),
                        "rgb": [c / 255.0 for c in sc.COLORS[obj["color"]]], "metal": obj["material"] == "metal"})
    return {"path": str(Path(path).resolve()), "objects": objects}


def make_job(scenes: list[dict], paths: list[Path], width: int, height: int) -> dict:
    """The JSON job read by _bpy_script.py."""
    return {
        "width": width, "height": height, "samples": SAMPLES, "ambient": rc.AMBIENT,
        "ground_albedo": rc.GROUND_ALBEDO, "sun_scale": SUN_SCALE,
        "camera": {"location": list(rc.CAMERA_LOCATION), "rotation_deg": list(rc.CAMERA_ROTATION_DEG),
                   "lens_mm": rc.CAMERA_LENS_MM, "sensor_mm": rc.CAMERA_SENSOR_MM},
        "lights": [[list(d), i] for d, i, _ in rc.LIGHTS],
        "images": [scene_job(s, p) for s, p in zip(scenes, paths)],
    }


def render_blender(scenes: list[dict], paths: list[Path], width: int, height: int,
                   blender_python: str | None = None, progress: bool = True) -> None:
    """Render scenes to PNGs with Blender Cycles in a subprocess; one progress step per finished image."""
    from tqdm import tqdm

    python = resolve_blender_python(blender_python)
    for p in paths:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trimpi-blender-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(make_job(scenes, paths, width, height)), encoding="utf-8")
        env = {**os.environ, "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.Popen([python, str(SCRIPT), str(job_file)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        with tqdm(total=len(scenes), desc="rendering (blender)", unit="img", disable=not progress) as bar:
            for line in proc.stdout:
                if line.startswith("rendered "):
                    bar.update()
        err = proc.stderr.read()
        if proc.wait() != 0:
            last = (err.strip().splitlines() or ["no error output"])[-1]
            if proc.returncode == 3:
                raise TrimpiError(f"{python} cannot import bpy ({last}): install it with `{INSTALL_HINT}`")
            raise TrimpiError(f"Blender rendering failed (exit {proc.returncode}): {last}")
