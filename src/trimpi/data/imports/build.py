"""`trimpi data import`: policy documents + example files → a trimpi dataset directory.

OUT/
  manifest.json                  options, counts per split, answer types, SHA-256 of every file
  policies/<name>.json           {"name", "text", "images"} (+ the keys of a policy JSON given as input)
  override_policies/<name>.json  the updated policy of the same name (override_test.jsonl), if given
  images/<sha256[:16]>.<ext>     every image once (policy and examples), copied or linked
  scenes/<sha256[:16]>.json      scene graphs, when rows give them
  train.jsonl  train_cot.jsonl  test.jsonl  [override_test.jsonl  general_test.jsonl]

Rows without a split are divided train/test by `test_fraction` (seeded; rows sharing a `group`
stay together). train_cot.jsonl holds the training rows with reasoning unless rows name that
split themselves. The same inputs and options give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.answers import parse_answer_type
from trimpi.data.imports.formats import Example, ImageRef, to_example
from trimpi.data.imports.media import IMAGE_MODES, MediaStore
from trimpi.data.imports.policy_doc import PolicyDoc, load_policy_docs
from trimpi.data.imports.readers import read_rows
from trimpi.data.io import exclusive, sha256_file, staged_directory, write_json, write_jsonl
from trimpi.errors import ConfigError, DataError

SPLITS = ("train", "train_cot", "test", "override_test", "general_test")
FREE_FORM = ("tool_call", "judge")  # answered as they are; the other types read the answer inside \\boxed{}


@dataclass
class ImportOptions:
    """The options of `trimpi data import`."""

    examples: list[Path]
    policies: list[str]  # "FILE" or "NAME=FILE"
    override_policies: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # record field -> column name
    answer_type: str | dict[str, Any] | None = None  # for the whole dataset; a per-row column wins
    task: str = "custom"
    name: str | None = None
    test_fraction: float = 0.2
    seed: int = 0
    images: str = "copy"  # copy | link
    delimiter: str | None = None
    workers: int = 2

    def check(self) -> None:
        if not self.examples:
            raise DataError("--examples: give at least one examples file or datasets directory")
        if not self.policies:
            raise DataError("--policy: give at least one policy document")
        if not 0.0 <= self.test_fraction < 1.0:
            raise DataError(f"--test-fraction: expected a number in [0, 1), got {self.test_fraction}")
        if self.images not in IMAGE_MODES:
            raise DataError(f"--images: expected one of {', '.join(IMAGE_MODES)}, got {self.images!r}")
        if self.answer_type is not None:
            self.answer_type = answer_type_spec(self.answer_type, "--answer-type")


def answer_type_spec(value: Any, where: str) -> str | dict[str, Any]:
    """A declared answer type (a name, an object, or that object as JSON text), checked by `data.answers`."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: answer type is not valid JSON ({e.msg})") from None
    try:
        parse_answer_type(value)
    except ConfigError as e:
        raise DataError(f"{where}: {e}") from None
    return value


def type_name(spec: str | dict[str, Any] | None) -> str | None:
    return spec.get("type") if isinstance(spec, dict) else spec


def response_for(ex: Example, answer_type: str | dict[str, Any] | None) -> str:
    """The answer as the model must write it: the given response, else the answer itself (tool calls,
    judged text) or \\boxed{answer} (the form the exact / choice / numeric scorers read)."""
    if ex.response:
        return ex.response
    return ex.answer if type_name(answer_type) in FREE_FORM else f"\\boxed{{{ex.answer}}}"


def assign_splits(examples: list[Example], fraction: float, seed: int) -> None:
    """Rows without a split: round(fraction · groups) groups (a row's group, or its id) go to test, the rest to
    train. Groups are ordered by a seeded hash, so the split does not depend on row order."""
    keys = sorted({ex.group or ex.id for ex in examples if ex.split is None},
                  key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).digest())
    n_test = round(len(keys) * fraction)
    if fraction > 0 and len(keys) >= 2:
        n_test = min(max(n_test, 1), len(keys) - 1)
    test = set(keys[:n_test])
    for ex in examples:
        if ex.split is None:
            ex.split = "test" if (ex.group or ex.id) in test else "train"


def check_example(ex: Example, policies: dict[str, PolicyDoc], overrides: dict[str, PolicyDoc],
                  default_type: str | None) -> None:
    if ex.split is not None and ex.split not in SPLITS:
        raise DataError(f"{ex.where}: field 'split': unknown split {ex.split!r} (expected {', '.join(SPLITS)})")
    if ex.policy is None and ex.split != "general_test":
        if len(policies) != 1:
            raise DataError(f"{ex.where}: field 'policy': missing, and {len(policies)} policies were given "
                            f"({', '.join(sorted(policies))}); say which one governs each row")
        ex.policy = next(iter(policies))
    if ex.policy is not None and ex.policy not in policies:
        raise DataError(f"{ex.where}: field 'policy': unknown policy {ex.policy!r} "
                        f"(known: {', '.join(sorted(policies))}; add it with --policy {ex.policy}=FILE)")
    if ex.split == "override_test" and ex.policy not in overrides:
        raise DataError(f"{ex.where}: field 'split': an override_test row needs an override policy named "
                        f"{ex.policy!r} (--override-policy {ex.policy}=FILE)")
    if ex.answer_type is not None:
        ex.answer_type = answer_type_spec(ex.answer_type, f"{ex.where}: field 'answer_type'")
    elif default_type is not None:
        ex.answer_type = default_type


def read_examples(opts: ImportOptions) -> list[Example]:
    """Every row of every examples file, converted; rows without an id are named FILE-STEM-N."""
    examples: list[Example] = []
    expected = {opts.columns.get(f, f) for f in ("query", "answer", "messages", "prompt")}
    for path in opts.examples:
        stem = Path(path).stem
        for n, row in enumerate(read_rows(path, opts.delimiter, expected), 1):
            ex = to_example(row, opts.columns)
            ex.id = ex.id or f"{stem}-{n}"
            examples.append(ex)
    if not examples:
        raise DataError(f"{', '.join(map(str, opts.examples))}: no examples")
    return examples


def check_unique_ids(examples: list[Example]) -> None:
    """Ids are unique within each split (once every row has its split)."""
    seen: dict[tuple[str | None, str | None], str] = {}
    for ex in examples:
        key = (ex.split, ex.id)
        if key in seen:
            raise DataError(f"{ex.where}: field 'id': {ex.id!r} repeats {seen[key]} in split {ex.split!r}")
        seen[key] = ex.where


def record_dict(ex: Example, images: list[str], scene: str | None, task: str) -> dict[str, Any]:
    folder = "override_policies" if ex.split == "override_test" else "policies"
    row = {
        "id": ex.id, "task": ex.task or task, "split": ex.split, "policy": ex.policy,
        "policy_path": f"{folder}/{ex.policy}.json" if ex.policy else None,
        "images": images, "scene": scene, "query": ex.query, "answer": ex.answer,
        "response": response_for(ex, ex.answer_type), "reasoning": ex.reasoning, "meta": ex.meta,
    }
    if ex.answer_type is not None:
        row["answer_type"] = ex.answer_type
    return row


def _type_label(spec: str | dict[str, Any] | None) -> str:
    if spec is None:
        return "(task default)"
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)


def policy_json(doc: PolicyDoc, store: MediaStore) -> dict[str, Any]:
    """The policy file's JSON; image paths are relative to its own directory (one level below OUT)."""
    paths = store.add_all([([ImageRef(path=str(p)) for p in doc.images], doc.source.parent, str(doc.source))])[0]
    return {**doc.extra, "name": doc.name, "text": doc.text, "images": [f"../{p}" for p in paths]}


def split_files(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    files = {s: [r for r in records if r["split"] == s] for s in SPLITS}
    if not files["train_cot"]:
        files["train_cot"] = [{**r, "split": "train_cot"} for r in files["train"] if r["reasoning"]]
    return {s: rows for s, rows in files.items() if rows or s in ("train", "test")}


def import_dataset(opts: ImportOptions, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Build the dataset directory at `out` (atomically); return its manifest."""
    opts.check()
    policies = load_policy_docs(opts.policies)
    overrides = load_policy_docs(opts.override_policies, "--override-policy")
    for name in overrides:
        if name not in policies:
            raise DataError(f"--override-policy: {name!r} overrides no policy (known: {', '.join(sorted(policies))})")
    examples = read_examples(opts)
    for ex in examples:
        check_example(ex, policies, overrides, opts.answer_type)
    assign_splits(examples, opts.test_fraction, opts.seed)
    check_unique_ids(examples)
    with exclusive(out), staged_directory(out, overwrite) as stage:
        store = MediaStore(stage / "images", opts.images, opts.workers)
        images = store.add_all((ex.images, ex.base, ex.where) for ex in examples)
        scenes = [store.add_scene(ex.scene, ex.base, ex.where) if ex.scene else None for ex in examples]
        for name, doc in policies.items():
            write_json(stage / "policies" / f"{name}.json", policy_json(doc, store))
        for name, doc in overrides.items():
            write_json(stage / "override_policies" / f"{name}.json", policy_json(doc, store))
        records = [record_dict(ex, im, sc, opts.task) for ex, im, sc in zip(examples, images, scenes, strict=True)]
        files = split_files(records)
        if not files["train"]:
            raise DataError(f"{opts.examples[0]}: no training rows (every row is in another split)")
        for split, rows in files.items():
            write_jsonl(stage / f"{split}.jsonl", rows)
        manifest = {
            "dataset": opts.name or Path(out).name,
            "source": "trimpi data import",
            "task": opts.task,
            "policies": sorted(policies),
            "override_policies": sorted(overrides),
            "config": {"examples": [str(p) for p in opts.examples], "policies": opts.policies,
                       "override_policies": opts.override_policies, "columns": opts.columns,
                       "answer_type": opts.answer_type, "test_fraction": opts.test_fraction, "seed": opts.seed,
                       "images": opts.images},
            "counts": {split: len(rows) for split, rows in files.items()},
            "answer_types": dict(sorted(Counter(_type_label(r.get("answer_type")) for r in records).items())),
            "images": sum(1 for _ in (stage / "images").iterdir()),
            "files": {p.relative_to(stage).as_posix(): sha256_file(p)
                      for p in sorted(stage.rglob("*")) if p.is_file() or p.is_symlink()},
        }
        write_json(stage / "manifest.json", manifest)
    return manifest
