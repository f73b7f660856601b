"""The shipped micro base: export (half-precision safetensors + processor + model card) and verified load.

A base directory holds what `save_pretrained` writes (config.json, model.safetensors, processor
and tokenizer files), `base.json` (the facts of the card, including the SHA-256 of the weights)
and README.md (the model card, written from base.json). Loading checks the weights' SHA-256
against base.json first: a modified or truncated file is a one-line error, never a bad model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trimpi.data.io import ordinary_modes, read_json, sha256_file, write_json
from trimpi.errors import ModelError

WEIGHTS = "model.safetensors"
MANIFEST = "base.json"
MAX_MB = 50


def model_card(facts: dict[str, Any]) -> str:
    """README.md of a base directory: every fact of base.json, in a readable order."""
    lines = [f"# {facts.get('name', 'trimpi micro base')}", "", facts.get("summary", ""), ""]
    for key in sorted(facts):
        if key in ("name", "summary"):
            continue
        value = facts[key]
        if isinstance(value, dict):
            lines += [f"## {key}", ""] + [f"- {k}: `{v}`" for k, v in value.items()] + [""]
        else:
            lines += [f"- **{key}**: `{value}`"]
    return "\n".join(lines).rstrip() + "\n"


def export_base(model, processor, out: str | Path, facts: dict[str, Any], dtype: torch.dtype = torch.bfloat16) -> dict:
    """Write model (cast to `dtype`) + processor + base.json + README.md into `out`; returns base.json."""
    import copy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to(dtype).save_pretrained(out)
    processor.save_pretrained(out)
    ordinary_modes(out)
    weights = out / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{out}: save_pretrained wrote no {WEIGHTS}")
    size_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 2**20
    if size_mb > MAX_MB:
        raise ModelError(f"{out}: the base is {size_mb:.1f} MB, over the {MAX_MB} MB limit: choose a smaller model")
    manifest = facts | {"weights": WEIGHTS, "sha256": sha256_file(weights), "storage_dtype": str(dtype).split(".")[-1],
                        "size_mb": round(size_mb, 2)}
    write_json(out / MANIFEST, manifest)
    (out / "README.md").write_text(model_card(manifest), encoding="utf-8")
    return manifest


def verify_base(path: str | Path) -> dict:
    """base.json of a base directory whose weights match its recorded SHA-256 (else a one-line ModelError)."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise ModelError(f"{path}: not a shipped base (no {MANIFEST})")
    manifest = read_json(path / MANIFEST)
    weights = path / str(manifest.get("weights", WEIGHTS))
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file missing")
    actual = sha256_file(weights)
    if actual != manifest.get("sha256"):
        raise ModelError(f"{weights}: SHA-256 {actual[:16]}… does not match {MANIFEST} "
                         f"({str(manifest.get('sha256'))[:16]}…): the weights were modified or damaged")
    return manifest


def load_base(path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, processor) of a verified base directory, in `dtype` (the device's compute dtype)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    verify_base(path)
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype, local_files_only=True)
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - config / file errors: one line, not a library traceback
        raise ModelError(f"{path}: cannot load the shipped base ({type(e).__name__}: {e})".splitlines()[0][:300]) from None
    return model.to(dtype), processor
