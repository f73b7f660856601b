"""`trimpi data preview`: a contact sheet of examples with their policy names and answers."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from trimpi.data.io import write_bytes_atomic
from trimpi.data.schema import Record, load_records
from trimpi.errors import DataError

TILE_W, TILE_H, CAPTION_H, COLUMNS = 240, 180, 58, 4


def dataset_dirs(root: Path, split: str) -> list[Path]:
    """`root` itself when it holds `<split>.jsonl`, else its sub-directories that do."""
    if (root / f"{split}.jsonl").is_file():
        return [root]
    found = sorted(p.parent for p in root.glob(f"*/{split}.jsonl"))
    if not found:
        raise DataError(f"{root}: no {split}.jsonl here or in its sub-directories")
    return found


def _tile(record: Record, root: Path, label: str, font: ImageFont.ImageFont) -> Image.Image:
    tile = Image.new("RGB", (TILE_W, TILE_H + CAPTION_H), "white")
    if record.images:
        path = root / record.images[0]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((TILE_W, TILE_H))
                tile.paste(im, ((TILE_W - im.width) // 2, (TILE_H - im.height) // 2))
        except (OSError, ValueError):
            raise DataError(f"{path}: image cannot be decoded (record {record.id})") from None
    answer = record.answer if len(record.answer) <= 60 else record.answer[:57] + "..."
    lines = [f"{label} | {record.policy or record.task}"] + textwrap.wrap(f"answer: {answer}", 38)[:2]
    draw = ImageDraw.Draw(tile)
    for k, line in enumerate(lines):
        draw.text((4, TILE_H + 3 + 17 * k), line, fill="black", font=font)
    return tile


def write_preview(data: str | Path, out: str | Path, split: str = "test", n: int = 12, seed: int = 0) -> Path:
    """Sample `n` records (spread over the settings found) and write them as one PNG."""
    data, out = Path(data), Path(out)
    if n < 1:
        raise DataError("preview: n must be at least 1")
    rng = np.random.default_rng(seed)
    picked: list[tuple[Record, Path, str]] = []
    dirs = dataset_dirs(data, split)
    for k, d in enumerate(dirs):
        records = load_records(d / f"{split}.jsonl")
        share = n // len(dirs) + (k < n % len(dirs))
        for i in sorted(rng.choice(len(records), min(share, len(records)), replace=False)):
            picked.append((records[i], d, d.name))
    font = ImageFont.load_default(size=13)
    rows = -(-len(picked) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * TILE_W, rows * (TILE_H + CAPTION_H)), (235, 235, 235))
    for k, (record, root, label) in enumerate(picked):
        x, y = (k % COLUMNS) * TILE_W, (k // COLUMNS) * (TILE_H + CAPTION_H)
        sheet.paste(_tile(record, root, label, font), (x, y))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(out, buf.getvalue())
    return out
