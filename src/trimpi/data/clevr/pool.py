"""The image pool: scenes sampled (or read from a CLEVR release) and rendered once, shared by all settings.

Layout under `pool/`: `images/CLEVR_<split>_<i>.png`, `scenes/CLEVR_<split>_<i>.json` (one scene
graph each, CLEVR v1.0 schema) and `CLEVR_<split>_scenes.json` (all of them, as CLEVR ships them).
Splits: `train` (training images) and `test` (unseen images for the test sets).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trimpi.data.clevr.config import ClevrConfig
from trimpi.data.clevr.tree import ATTRIBUTE_VALUES
from trimpi.data.io import image_problem, read_json, write_json
from trimpi.data.workers import imap
from trimpi.errors import DataError

POOL_STREAM = 1  # seed stream id of scene sampling
SPLIT_IDS = {"train": 0, "test": 1}
MIN_PIXELS_320x240 = 100  # CLEVR's 200 visible pixels at 480x320, as a fraction of the image
CLEVR_SPLITS = {"train": "train", "test": "val"}  # our split -> CLEVR release split


@dataclass(frozen=True)
class PoolImage:
    image: str  # path relative to the pool directory
    scene_file: str
    scene: dict


def image_name(split: str, index: int) -> str:
    return f"CLEVR_{split}_{index:06d}"


def _sample_one(index: int, split: str, cfg: ClevrConfig) -> dict:
    from trimpi.data.clevr.scene import sample_scene

    rng = np.random.default_rng([cfg.seed, POOL_STREAM, SPLIT_IDS[split], index])
    return sample_scene(
        rng, cfg.width, cfg.height, image_filename=image_name(split, index) + ".png", image_index=index,
        split=split, min_objects=cfg.min_objects, max_objects=cfg.max_objects, min_pixels=min_pixels(cfg),
    )


def min_pixels(cfg: ClevrConfig) -> int:
    """Visibility threshold scaled with the image area."""
    return max(4, round(MIN_PIXELS_320x240 * cfg.width * cfg.height / (320 * 240)))


def sample_scenes(cfg: ClevrConfig, split: str, count: int, progress: bool = True) -> list[dict]:
    """Scenes drawn independently per index, so the result does not depend on `workers`."""
    work = partial(_sample_one, split=split, cfg=cfg)
    desc = f"sampling {split} scenes"
    if cfg.workers == 1:
        return [work(i) for i in tqdm(range(count), desc=desc, disable=not progress)]
    it = imap(work, range(count), cfg.workers, chunksize=max(1, count // (8 * cfg.workers)))
    return list(tqdm(it, total=count, desc=desc, disable=not progress))


def _write_scenes(pool: Path, split: str, scenes: list[dict]) -> list[PoolImage]:
    items = []
    for scene in scenes:
        stem = Path(scene["image_filename"]).stem
        scene_file = f"scenes/{stem}.json"
        write_json(pool / scene_file, scene, indent=None)
        items.append(PoolImage(f"images/{scene['image_filename']}", scene_file, scene))
    write_json(pool / f"CLEVR_{split}_scenes.json", {"info": {"split": split}, "scenes": scenes}, indent=None)
    return items


def render_split(cfg: ClevrConfig, pool: Path, split: str, count: int, progress: bool = True) -> list[PoolImage]:
    from trimpi.data.clevr.render import render_pool

    scenes = sample_scenes(cfg, split, count, progress)
    paths = [pool / "images" / s["image_filename"] for s in scenes]
    render_pool(
        scenes, paths, cfg.width, cfg.height, renderer=cfg.renderer, workers=cfg.workers,
        blender_python=cfg.blender_python, progress=progress,
    )
    return _write_scenes(pool, split, scenes)


def check_clevr_scene(scene: dict, where: str) -> None:
    """A CLEVR scene graph must name an image and list objects with the four known attributes."""
    if not isinstance(scene, dict) or "image_filename" not in scene:
        raise DataError(f"{where}: missing field 'image_filename'")
    name = scene["image_filename"]
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise DataError(f"{where}: field 'image_filename' must be a file name, got {json.dumps(name)[:60]}")
    objects = scene.get("objects")
    if not isinstance(objects, list) or not objects:
        raise DataError(f"{where}: field 'objects' must be a non-empty list")
    for i, obj in enumerate(objects):
        for attr, values in ATTRIBUTE_VALUES.items():
            if obj.get(attr) not in values:
                raise DataError(f"{where}: objects[{i}].{attr} must be one of {list(values)}, got {obj.get(attr)!r}")


def _copy(src: Path, dst: Path) -> None:
    """A copy, never a hard link: a link would let an edit of the dataset change the user's CLEVR release."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def import_clevr_split(cfg: ClevrConfig, pool: Path, split: str, count: int) -> list[PoolImage]:
    """Take `count` seeded-random scenes of a CLEVR v1.0 release split, with their images."""
    root = Path(cfg.clevr_dir)
    clevr_split = CLEVR_SPLITS[split]
    scenes_file = root / "scenes" / f"CLEVR_{clevr_split}_scenes.json"
    data = read_json(scenes_file)
    scenes = data.get("scenes") if isinstance(data, dict) else None
    if not isinstance(scenes, list):
        raise DataError(f"{scenes_file}: missing field 'scenes' (a list of scene graphs)")
    if len(scenes) < count:
        raise DataError(f"{scenes_file}: {len(scenes)} scenes, but {count} are needed for the {split} split")
    rng = np.random.default_rng([cfg.seed, POOL_STREAM, SPLIT_IDS[split]])
    chosen = [scenes[i] for i in sorted(rng.choice(len(scenes), count, replace=False))]
    out = []
    for i, scene in enumerate(chosen):
        where = f"{scenes_file}: scenes[{scene.get('image_index', i) if isinstance(scene, dict) else i}]"
        check_clevr_scene(scene, where)
        src = root / "images" / clevr_split / scene["image_filename"]
        if not src.is_file():
            raise DataError(f"{where}: image {src} not found")
        problem = image_problem(src)
        if problem:
            raise DataError(f"{where}: image {src} cannot be decoded ({problem})")
        scene = {**scene, "image_filename": image_name(split, i) + src.suffix, "source": scene["image_filename"]}
        _copy(src, pool / "images" / scene["image_filename"])
        out.append(scene)
    return _write_scenes(pool, split, out)


def build_pool(cfg: ClevrConfig, pool: Path, progress: bool = True) -> dict[str, list[PoolImage]]:
    counts = {"train": cfg.train_per_policy, "test": cfg.test}
    if cfg.clevr_dir:
        return {s: import_clevr_split(cfg, pool, s, n) for s, n in counts.items()}
    return {s: render_split(cfg, pool, s, n, progress) for s, n in counts.items()}
