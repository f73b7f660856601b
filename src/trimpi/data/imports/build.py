"""`trimpi data import`: policy documents + example files → a trimpi dataset directory.

OUT/
  manifest.json                  options, counts per split, answer types, SHA-256 of every file
  policies/<name>.json           {"name", "text", "images"} (+ the keys of a policy JSON given as input)
  override_policies/<name>.json  the updated policy of the same name (override_test.jsonl), if given
  images/<sha256[:16]>.<ext>     every image once (policy and examples), copied or linked
  scenes/<sha256[:16]>.json      scene graphs, when rows give them
  train.jsonl  train_cot.jsonl  test.jsonl  [override_test.jsonl  general_test.jsonl]

Rows without a split are divided train/test by `test_fraction`, stratified by answer (seeded; rows
sharing a `group` stay together). train_cot.jsonl holds the training rows with reasoning unless rows
name that split themselves. The same inputs and options give byte-identical files.

What a user most often gets wrong is caught here: a column of image paths that no field reads (an
error naming `--column images=COLUMN`), a header without the query / answer columns (the header is
blamed and its columns listed), an answer outside a choice's options. What may be wrong is a warning
in the manifest (`warnings`): a test split under 30 records or missing an answer that training has,
a policy sentence that asks for a bare answer while the model is trained to write \\boxed{}. The
manifest's `answer_format` says how answers are written and read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.answers import CustomAnswer, load_function, parse_answer_type, unboxed
from trimpi.data.imports.formats import Example, column_problem, to_example, unmapped_image_column
from trimpi.data.imports.media import IMAGE_MODES, MediaStore
from trimpi.data.imports.policy_doc import PolicyDoc, bare_answer_sentences, load_policy_docs
from trimpi.data.imports.readers import read_rows
from trimpi.data.io import exclusive, sha256_file, staged_directory, write_json, write_jsonl
from trimpi.errors import ConfigError, DataError

SPLITS = ("train", "train_cot", "test", "override_test", "general_test")
FREE_FORM = ("tool_call", "judge")  # answered as they are; the other types read the answer inside \\boxed{}
MIN_TEST = 30  # a test split smaller than this gives accuracies too uncertain to compare methods


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
    media_root: Path | None = None  # where image/scene paths resolve (default: each examples file's folder)

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
        kind = parse_answer_type(value)
        if isinstance(kind, CustomAnswer):
            load_function(kind.spec)  # Python code: imported only when the user trusted it (--trust-code)
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


def _hash(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def _quotas(sizes: dict[str, int], total: int) -> dict[str, int]:
    """`total` test places shared among classes in proportion to their sizes (largest remainder)."""
    n = sum(sizes.values())
    exact = {c: total * k / n for c, k in sizes.items()}
    quota = {c: math.floor(v) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: (quota[c] - exact[c], c))[: total - sum(quota.values())]:
        quota[c] += 1
    return quota


def assign_splits(examples: list[Example], fraction: float, seed: int) -> None:
    """Rows without a split: round(fraction · groups) groups (a row's group, or its id) go to test, the rest to
    train, stratified by answer: each answer gets its share of the test places. Groups are ordered by a
    seeded hash, so the split does not depend on row order."""
    answers: dict[str, Counter] = {}
    for ex in examples:
        if ex.split is None:
            answers.setdefault(ex.group or ex.id, Counter())[unboxed(ex.answer)] += 1
    keys = sorted(answers, key=lambda k: _hash(seed, k))
    n_test = round(len(keys) * fraction)
    if fraction > 0 and len(keys) >= 2:
        n_test = min(max(n_test, 1), len(keys) - 1)
    by_class: dict[str, list[str]] = {}
    for k in keys:  # a group's class: its most frequent answer
        by_class.setdefault(min(answers[k].items(), key=lambda kv: (-kv[1], kv[0]))[0], []).append(k)
    quota = _quotas({c: len(ks) for c, ks in by_class.items()}, n_test) if keys else {}
    test = {k for c, ks in by_class.items() for k in ks[: quota[c]]}
    for ex in examples:
        if ex.split is None:
            ex.split = "test" if (ex.group or ex.id) in test else "train"


def split_warnings(examples: list[Example]) -> list[str]:
    """A test split too small to compare methods, or missing answers that training has: one line each, with numbers."""
    test = Counter(unboxed(ex.answer) for ex in examples if ex.split == "test")
    train = Counter(unboxed(ex.answer) for ex in examples if ex.split == "train")
    out = []
    if sum(test.values()) < MIN_TEST:
        out.append(f"the test split has {sum(test.values())} records (train {sum(train.values())}): under {MIN_TEST}, "
                   "a 95 % interval on accuracy is wider than ±15 points; give more test rows or a larger --test-fraction")
    missing = sorted(a for a in train if a not in test)
    if test and missing and len(train) <= 50:
        out.append(f"the test split ({sum(test.values())} records) has no record answered "
                   + ", ".join(f"{a!r} (train {train[a]})" for a in missing)
                   + "; those answers are never tested")
    return out


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
    check_option(ex)


def check_option(ex: Example) -> None:
    """A choice answer must name one of its options (when the type lists them)."""
    if type_name(ex.answer_type) != "choice":
        return
    kind = parse_answer_type(ex.answer_type)
    if kind.options and kind.index(unboxed(ex.answer)) is None:
        raise DataError(f"{ex.where}: field 'answer': {unboxed(ex.answer)!r} is not one of the options "
                        f"({', '.join(kind.options)})")


def read_examples(opts: ImportOptions) -> list[Example]:
    """Every row of every examples file, converted; rows without an id are named FILE-STEM-N."""
    examples: list[Example] = []
    expected = {opts.columns.get(f, f) for f in ("query", "answer", "messages", "prompt")}
    for path in opts.examples:
        stem = Path(path).stem
        for n, row in enumerate(read_rows(path, opts.delimiter, expected), 1):
            if n == 1 and (problem := column_problem(row, opts.columns)):
                raise DataError(f"{path}: {problem}")
            ex = to_example(row, opts.columns)
            if not ex.images and (column := unmapped_image_column(ex)):
                raise DataError(f"{ex.where}: column {column!r} holds image files ({ex.meta[column]!r}) that no field "
                                f"reads, so the rows would have no images: pass --column images={column}")
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


def answer_format(records: list[dict[str, Any]]) -> dict[str, str]:
    """How the model is trained to write its answer and how scoring reads it (the record's answer type decides)."""
    names = {type_name(r.get("answer_type")) or ("tool_call" if r["task"] == "gta" else "exact") for r in records}
    given = any(r["response"] != f"\\boxed{{{r['answer']}}}" and type_name(r.get("answer_type")) not in FREE_FORM
                for r in records)
    if names <= {"tool_call"}:
        return {"extraction": "json_tool_call", "written": "one JSON tool call {\"name\", \"arguments\"}",
                "read": "the last JSON tool call after the reasoning"}
    if names <= {"judge"}:
        return {"extraction": "judged_text", "written": "the reply itself",
                "read": "the whole reply after the reasoning, rated by an LLM judge"}
    return {"extraction": "boxed", "written": "the response column as given" if given else "\\boxed{ANSWER}",
            "read": "the last \\boxed{...} after the reasoning, compared by the answer type "
                    f"({', '.join(sorted(n for n in names if n))})"}


def format_warnings(policies: dict[str, PolicyDoc], fmt: dict[str, str]) -> list[str]:
    """Policy sentences that ask for a bare answer while answers are read from \\boxed{}."""
    if fmt["extraction"] != "boxed":
        return []
    return [f"{doc.source.name}: the policy says {sentence!r}, but the model is trained to write "
            f"{fmt['written']} (answers are read from the last \\boxed{{}}); the policy in context and the "
            "training target disagree: reword the sentence, or give a response column with the exact reply"
            for doc in policies.values() for _, sentence in bare_answer_sentences(doc)]


def _type_label(spec: str | dict[str, Any] | None) -> str:
    if spec is None:
        return "(task default)"
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)


def policy_json(doc: PolicyDoc, store: MediaStore) -> dict[str, Any]:
    """The policy file's JSON; image paths are relative to its own directory (one level below OUT)."""
    paths = store.add_policy_images(doc.images, str(doc.source))
    return {**doc.extra, "name": doc.name, "text": doc.text, "images": [f"../{p}" for p in paths]}


def split_files(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    files = {s: [r for r in records if r["split"] == s] for s in SPLITS}
    if not files["train_cot"]:
        files["train_cot"] = [{**r, "split": "train_cot"} for r in files["train"] if r["reasoning"]]
    return {s: rows for s, rows in files.items() if rows or s in ("train", "test")}


def import_dataset(opts: ImportOptions, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Build the dataset directory at `out` (atomically); return its manifest."""
    opts.check()
    policies = load_policy_docs(opts.policies, default_name=opts.name)
    lone = next(iter(policies)) if len(policies) == 1 else None  # an override of the only policy keeps its name
    overrides = load_policy_docs(opts.override_policies, "--override-policy", default_name=lone)
    for name in overrides:
        if name not in policies:
            raise DataError(f"--override-policy: {name!r} overrides no policy (known: {', '.join(sorted(policies))})")
    examples = read_examples(opts)
    for ex in examples:
        check_example(ex, policies, overrides, opts.answer_type)
    assign_splits(examples, opts.test_fraction, opts.seed)
    check_unique_ids(examples)
    warnings = split_warnings(examples)
    with exclusive(out), staged_directory(out, overwrite) as stage:
        store = MediaStore(stage / "images", opts.images, opts.workers, opts.media_root)
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
        fmt = answer_format(records)
        warnings += format_warnings(policies, fmt)
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
            "answer_format": fmt,
            "images": sum(1 for _ in (stage / "images").iterdir()),
            "scenes": sum(1 for r in records if r["scene"]),
            "warnings": warnings,
            "files": {p.relative_to(stage).as_posix(): sha256_file(p)
                      for p in sorted(stage.rglob("*")) if p.is_file() or p.is_symlink()},
        }
        write_json(stage / "manifest.json", manifest)
    return manifest
