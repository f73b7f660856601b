"""Shared helpers for the evaluation tests: a tiny ClevrPolicy set, a tiny model, a scripted engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from trimpi.data.schema import Record, load_records
from trimpi.generation.engine import Completion

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def make_clevr(root: Path) -> Path:
    """A depth-2 ClevrPolicy-T setting with 6 test, 6 override and 4 general records; returns its directory."""
    from trimpi.data.clevr.build import build_clevr
    from trimpi.data.clevr.config import ClevrConfig

    cfg = ClevrConfig(depths=[2], variant="T", policies=2, train_per_policy=4, test=6, cot=2, general=4,
                      width=64, height=48, workers=1)
    build_clevr(cfg, root / "clevr", overwrite=True, progress=False)
    return root / "clevr" / "T-d2"


def tiny_for(dataset: Path, seed: int = 0):
    """A tiny random Idefics3 whose tokenizer is trained on the dataset's policies and traces."""
    from trimpi.models.tiny import build_tiny

    texts = [json.loads(p.read_text())["text"] for p in sorted(dataset.glob("*policies/*.json"))]
    texts += [r.query + " " + (r.reasoning or "") + r.response for r in load_records(dataset / "train_cot.jsonl")]
    return build_tiny("idefics3", texts=texts * 2, seed=seed)


def image_key(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


def record_image_key(dataset: Path, record: Record) -> bytes:
    with Image.open(dataset / record.images[-1]) as im:
        return image_key(im)


class ScriptedEngine:
    """A GenerationEngine whose replies come from `reply(prompt)`, ignoring any model.

    `seen` records (prompt text, image count) of every prompt it was asked about; every completion
    reports `truncated`.
    """

    def __init__(self, reply, truncated: bool = False):
        self.reply, self.seen, self.truncated = reply, [], truncated

    def update_weights(self, model) -> None:
        pass

    def generate(self, prompts, n, params):
        out = []
        for p in prompts:
            self.seen.append((p.text, len(p.images)))
            text = self.reply(p)
            out.append([Completion(token_ids=[1] * (len(text) % 7 + 1), text=text, truncated=self.truncated)] * n)
        return out


def by_image(dataset: Path, records: list[Record], texts: list[str], default: str = "no idea"):
    """A reply function answering texts[i] to the prompt whose last image is records[i]'s image."""
    table = {record_image_key(dataset, r): t for r, t in zip(records, texts, strict=True)}
    return lambda prompt: table.get(image_key(prompt.images[-1]), default) if prompt.images else default


def last_boxed(text: str) -> str | None:
    """The test's own reading of the final boxed answer (no nesting in these answers)."""
    found = BOXED.findall(text.split("</think>")[-1])
    return found[-1] if found else None


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
