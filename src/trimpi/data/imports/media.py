"""Image and scene files of an import: verified, content-addressed, copied or linked into the dataset.

Every image is decoded with PIL (`trimpi.data.io.image_problem`) before it is accepted: a file that
is not an image, or is cut short, is an error naming the row. Files are stored once under
`images/<sha256[:16]>.<ext>`, whatever their source name, so two rows showing one picture share a file.

Paths in examples and policy documents resolve inside the folder of the file naming them (or inside an
explicit `--media-root`): an absolute path, a `..` that climbs out or a symbolic link leading out is an
error naming the row and field (`trimpi.data.io.inside`), so an import never reads or copies other files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trimpi.data.imports.formats import ImageRef
from trimpi.data.io import image_problem, inside
from trimpi.errors import DataError

IMAGE_MODES = ("copy", "link")
_EXT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def image_format(data: bytes) -> str | None:
    """PIL's name for the format of image bytes, read from the header only; None when PIL knows none."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # `image_problem` names what is wrong


class MediaStore:
    """Puts verified images (and scene JSON files) into `root` and returns their dataset-relative paths."""

    def __init__(self, root: Path, mode: str = "copy", workers: int = 2, media_root: Path | None = None):
        if mode not in IMAGE_MODES:
            raise DataError(f"--images: expected one of {', '.join(IMAGE_MODES)}, got {mode!r}")
        self.root, self.mode, self.workers = Path(root), mode, workers
        self.media_root = Path(media_root) if media_root is not None else None
        self._by_source: dict[Path | bytes, str] = {}

    def _inside(self, path: str, base: Path, where: str) -> Path:
        """`path`, relative to `base` (the naming file's folder), resolved; it must lie inside `base`, or inside
        the explicit media root when one was given (`--media-root`)."""
        return inside(self.media_root or base, path, where, base=base)

    def _source(self, ref: ImageRef, base: Path, where: str) -> Path | None:
        if ref.data is not None:
            return None
        if "://" in ref.path:
            raise DataError(f"{where}: field 'images': {ref.path!r} is a URL; trimpi downloads nothing")
        path = self._inside(ref.path, base, f"{where}: field 'images'")
        if not path.is_file():
            raise DataError(f"{where}: field 'images': image file {ref.path!r} not found (looked for {path})")
        return path

    def _store(self, src: Path | None, data: bytes | None, where: str) -> str:
        """Store one image under its content hash, then decode it (`io.image_problem`); return its path."""
        if data is None:
            data = src.read_bytes()
        fmt = image_format(data)
        rel = f"images/{hashlib.sha256(data).hexdigest()[:16]}{_EXT.get(fmt, '.' + (fmt or 'bin').lower())}"
        dest = self.root.parent / rel
        if not dest.exists():
            if self.mode == "link" and src is not None:
                os.symlink(src, dest)
            else:
                dest.write_bytes(data)
        problem = image_problem(dest)
        if problem:
            name = src.name if src is not None else "embedded image"
            raise DataError(f"{where}: field 'images': {name} is not a readable image ({problem})")
        return rel

    def add_all(self, items: Iterable[tuple[list[ImageRef], Path, str]]) -> list[list[str]]:
        """Dataset-relative paths for each (refs, base, where); images are decoded on `workers` threads."""
        items = list(items)
        self.root.mkdir(parents=True, exist_ok=True)
        jobs: dict[Path | bytes, tuple[Path | None, bytes | None, str]] = {}
        keys: list[list[Path | bytes]] = []
        for refs, base, where in items:
            row_keys = []
            for ref in refs:
                src = self._source(ref, base, where)
                key = src if src is not None else ref.data
                if key not in self._by_source and key not in jobs:
                    jobs[key] = (src, ref.data, where)
                row_keys.append(key)
            keys.append(row_keys)
        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            done = pool.map(lambda job: self._store(*job), list(jobs.values()))
            for key, rel in zip(list(jobs), done, strict=True):
                self._by_source[key] = rel
        return [[self._by_source[k] for k in row] for row in keys]

    def add_policy_images(self, images: list[Path], where: str) -> list[str]:
        """A policy document's images, which `policy_doc` already resolved inside the policy's folder."""
        if not images:
            return []
        root = Path(os.path.commonpath([str(p.parent) for p in images]))
        return self.add_all([([ImageRef(path=str(p)) for p in images], root, where)])[0]

    def add_scene(self, path: str, base: Path, where: str) -> str:
        """A scene-graph JSON file, checked to parse, stored under scenes/."""
        src = self._inside(path, base, f"{where}: field 'scene'")
        if src in self._by_source:
            return self._by_source[src]
        if not src.is_file():
            raise DataError(f"{where}: field 'scene': file {path!r} not found (looked for {src})")
        data = src.read_bytes()
        try:
            json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{where}: field 'scene': {src.name} is not valid JSON ({e})") from None
        rel = f"scenes/{hashlib.sha256(data).hexdigest()[:16]}.json"
        dest = self.root.parent / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.write_bytes(data)
        self._by_source[src] = rel
        return rel
