"""Dataset directory → chat training examples for each supervised stage.

  cpt          [policy with its images, input images, query, reasoning, answer]; train_cot.jsonl
  cpt answer   [policy with its images, input images, query, answer] (no traces); train.jsonl
  sft cot      [input images, query] → reasoning + answer; train_cot.jsonl
  sft answer   [input images, query] → answer only (Direct SFT); train.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from trimpi.data.schema import PolicyStore, Record, load_records, render_messages
from trimpi.errors import DataError

Stage = Literal["cpt", "sft"]
Target = Literal["cot", "answer"]
DEFAULT_SPLIT = {("cpt", "cot"): "train_cot", ("cpt", "answer"): "train", ("sft", "cot"): "train_cot",
                 ("sft", "answer"): "train"}


def records_path(data: str | Path, stage: Stage, target: Target = "cot", split: str | None = None) -> Path:
    """The JSONL file a stage reads; a missing directory or file is a one-line DataError."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: dataset directory not found")
    split = split or DEFAULT_SPLIT.get((stage, target))
    if split is None:
        raise DataError(f"stage {stage!r} has no target {target!r}")
    path = data / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: file not found ({stage} with target {target} reads the {split} split)")
    return path


def example_messages(record: Record, root: Path, store: PolicyStore, stage: Stage, target: Target):
    """Chat messages of one training sequence (the last message is the assistant target)."""
    if stage == "cpt":
        if target == "cot" and not record.reasoning:
            raise DataError(f"record {record.id}: VM-CPT needs a reasoning trace (or target answer)")
        return render_messages(record, root, store.get(record), placement="user", with_target=True,
                               with_reasoning=(target == "cot"))
    return render_messages(record, root, None, with_target=True, with_reasoning=(target == "cot"))


def build_examples(
    data: str | Path, stage: Stage, target: Target = "cot", split: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """[{"id", "messages"}] for a stage, checking that every image and policy file exists."""
    path = records_path(data, stage, target, split)
    root = Path(data)
    records = load_records(path)[:limit] if limit else load_records(path)
    if not records:
        raise DataError(f"{path}: no records")
    if stage == "sft" and target == "cot":
        missing = [r.id for r in records if not r.reasoning]
        if missing:
            raise DataError(f"{path}: {len(missing)} records without 'reasoning' (e.g. {missing[0]}); use --target answer")
    store = PolicyStore(root)
    out = []
    for r in records:
        messages = example_messages(r, root, store, stage, target)
        for m in messages:
            for block in m["content"]:
                if block.get("type") == "image" and not Path(block["path"]).is_file():
                    raise DataError(f"{block['path']}: image file not found (record {r.id})")
        out.append({"id": r.id, "messages": messages})
    return out

