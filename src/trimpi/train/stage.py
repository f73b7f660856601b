"""What every training stage (VM-CPT, SFT, perception warm-up, RL) shares about its output directory.

A stage owns its directory `out`: checkpoints under `out/checkpoints/`, per-step metrics in
`out/metrics.jsonl`, the final model saved with `save_pretrained`, and last of all the
marker `out/trimpi_stage.json` holding the stage's summary. Only the outermost stage writes
the marker (a warm-up that runs an SFT inside marks the directory once, after its own
evaluation), so a directory with a marker is a finished stage and one without is resumable.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from trimpi.data.io import OWNER_MARK, read_json, write_bytes_atomic, write_json
from trimpi.errors import TrimpiError

STAGE_MARKER = "trimpi_stage.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"

# A perception warm-up's own results in its summary (beside the SFT ones), carried into pipeline step
# results, the report and the CLI.
ATTRIBUTE_ACCURACY = "attribute_accuracy"  # captions: {"attributes": ..., per attribute}
EXISTENCE_ACCURACY = "existence_accuracy"  # yes/no existence questions: {"balanced_accuracy": ...}
VISION_PRETRAINING = "vision_pretraining"  # vision pre-training and its probe: {"probe_policy_accuracy": ...}
RESULT_KEYS = (ATTRIBUTE_ACCURACY, EXISTENCE_ACCURACY, VISION_PRETRAINING)


def finished_summary(out: str | Path) -> dict[str, Any] | None:
    """The summary of the finished stage in `out`, or None when it is not finished."""
    marker = Path(out) / STAGE_MARKER
    return read_json(marker) if marker.is_file() else None


def mark_finished(out: str | Path, summary: dict[str, Any]) -> None:
    """Record `summary` as the finished stage of `out`; call it after everything else is saved."""
    write_json(Path(out) / STAGE_MARKER, summary)


def prepare_stage_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse to train over a finished stage unless `overwrite`; an unfinished one resumes.

    With `overwrite`, everything in a finished stage's directory is removed first (model files,
    a LoRA run's adapter/ and adapter files, checkpoints, metrics; the marker last), so the new
    run starts from step 1 and leaves nothing of the old one behind. The directory itself stays.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TrimpiError(f"{out}: exists and is not a directory")
    if finished_summary(out) is not None:
        if not overwrite:
            raise TrimpiError(f"{out}: already holds a finished stage (pass --overwrite to train again)")
        clear_stage_files(out)
        (out / STAGE_MARKER).unlink(missing_ok=True)  # every process of a DDP run clears it
    return out


def clear_stage_files(out: Path) -> None:
    """Remove every entry of `out` except the finished marker and trimpi's ownership mark (entries another
    process removed first are skipped)."""
    for entry in list(out.iterdir()):
        if entry.name in (STAGE_MARKER, OWNER_MARK):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def weights_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be read (cut short, or not safetensors), from its header and size;
    None when it is whole. Reads the header only."""
    import json
    import struct

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else size
        if n > size - 8:
            return f"cut short ({size} bytes)"
        try:
            header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, AttributeError):
            return "not a safetensors file"
    return None if 8 + n + end <= size else f"cut short ({size} of {8 + n + end} bytes)"


def check_checkpoint_weights(folder: str | Path) -> None:
    """A one-line error for a checkpoint whose weight files are damaged (a disk filled, a copy cut short)."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        problem = weights_problem(path)
        if problem:
            raise TrimpiError(f"{path}: {problem}; remove {Path(folder).name} to resume from an earlier checkpoint, "
                              "or pass --overwrite to start again")


def resume_metrics(out: str | Path, step: int) -> list[dict[str, Any]]:
    """Keep the metrics rows of steps up to `step` (where the run resumes; 0 for a fresh start) and
    return them, so a resumed run's metrics have each step once. A torn last line (a kill while
    appending) is dropped."""
    import json

    path = Path(out) / METRICS_FILE
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            rows.append(row)
    if path.is_file():
        write_bytes_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
    return rows
