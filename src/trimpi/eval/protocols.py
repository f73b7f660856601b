"""The evaluation protocols (SPEC §6): which JSONL file each reads and whether the policy is in the prompt.

    accuracy           test.jsonl           no policy      end-to-end accuracy of an internalized model
    in_context         test.jsonl           policy         baseline: a (base) model reading the policy
    override           override_test.jsonl  new policy     an updated policy under the same name, in context
    policy_in_context  test.jsonl           policy         the internalized model with its policy put back
    referral           test.jsonl           no policy      does the reasoning cite the policy correctly?
    forgetting         general_test.jsonl   no policy      general questions, before vs after
    efficiency         test.jsonl           both           prompt tokens and prefill time with vs without
    perception         test.jsonl           no policy      existence balanced accuracy per attribute value / pair

`in_context` and `policy_in_context` run the same computation; they are kept apart so that
results of a base model and of an internalized model never share a name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimpi.data.io import iter_jsonl, numbered_jsonl
from trimpi.data.schema import check_relative_paths
from trimpi.errors import ConfigError, DataError


@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol: the split file it reads and whether prompts carry the record's policy."""

    name: str
    split: str
    with_policy: bool
    generates: bool
    description: str

    @property
    def filename(self) -> str:
        return f"{self.split}.jsonl"


PROTOCOLS: dict[str, ProtocolSpec] = {
    p.name: p
    for p in (
        ProtocolSpec("accuracy", "test", False, True, "accuracy without the policy"),
        ProtocolSpec("in_context", "test", True, True, "accuracy with the policy in the prompt (baseline)"),
        ProtocolSpec("override", "override_test", True, True, "accuracy with the override policy in the prompt"),
        ProtocolSpec("policy_in_context", "test", True, True, "internalized model with the policy put back"),
        ProtocolSpec("referral", "test", False, True, "policy referral of the reasoning (exact or LLM judge)"),
        ProtocolSpec("forgetting", "general_test", False, True, "general questions, before vs after"),
        ProtocolSpec("efficiency", "test", True, False, "prompt tokens and prefill time with vs without policy"),
        ProtocolSpec("perception", "test", False, False, "per attribute value / value pair existence balanced accuracy"),
    )
}
SPLIT_FILES = sorted({p.filename for p in PROTOCOLS.values()})


def parse_protocols(text: str) -> list[str]:
    """Comma-separated protocol names ("all" for every one), in the given order, without repeats."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().replace("-", "_")
        if not name:
            continue
        if name == "all":
            names.extend(PROTOCOLS)
            continue
        if name not in PROTOCOLS:
            raise ConfigError(f"--protocols: unknown protocol {raw.strip()!r} (expected {', '.join(PROTOCOLS)} or all)")
        names.append(name)
    if not names:
        raise ConfigError("--protocols: no protocol given")
    return list(dict.fromkeys(names))


def asks_for_all(text: str) -> bool:
    """Whether a --protocols value uses "all" (then protocols that do not apply to a dataset are skipped)."""
    return any(raw.strip() == "all" for raw in text.split(","))


JUDGE_FLAG = "--judge"  # how an error asks for the missing judge (a recipe asks for its `judge:` key instead)


def split_problem(dataset: Path, name: str) -> str | None:
    """Why the split file protocol `name` reads is missing or empty, or None."""
    path = dataset / PROTOCOLS[name].filename
    if not path.is_file():
        return f"{path}: file not found (protocol '{name}' needs {PROTOCOLS[name].filename})"
    if next(iter_jsonl(path), None) is None:
        return f"{path}: no records (protocol '{name}' has nothing to evaluate)"
    return None


def inapplicable(dataset: Path, name: str, judge: bool, ask: str = JUDGE_FLAG) -> str | None:
    """Why protocol `name` cannot run on `dataset` (a missing file, referral without a judge), or None.
    `ask`: how the message asks for the judge."""
    problem = split_problem(dataset, name)
    if problem is not None:
        return problem
    if name == "perception" and dataset_task(dataset) != "clevr":
        return f"{dataset}: perception reads ClevrPolicy scene graphs (task clevr), not task '{dataset_task(dataset)}'"
    if name == "referral" and not judge and dataset_task(dataset) != "clevr":
        task = dataset_task(dataset)
        return f"{dataset}: referral on task '{task}' needs {ask} (exact referral is ClevrPolicy only)"
    return None


def resolve_datasets(data: str | Path) -> list[Path]:
    """`data` itself when it holds split files, else its subdirectories that do (sorted)."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: dataset directory not found")
    if any((data / f).is_file() for f in SPLIT_FILES):
        return [data]
    found = sorted(d for d in data.iterdir() if d.is_dir() and any((d / f).is_file() for f in SPLIT_FILES))
    if not found:
        raise DataError(f"{data}: no dataset files ({', '.join(SPLIT_FILES)}) in it or its subdirectories")
    return found


def check_files(dataset: Path, protocols: list[str], judge: bool = True, ask: str = JUDGE_FLAG) -> None:
    """Raise a one-line error for the first requested protocol that cannot run on `dataset`."""
    for name in protocols:
        problem = split_problem(dataset, name)
        if problem is not None:
            raise DataError(problem)
        reason = inapplicable(dataset, name, judge, ask)
        if reason is not None:
            raise ConfigError(reason)
    for split in dict.fromkeys(PROTOCOLS[name].filename for name in protocols):
        with_policy = any(PROTOCOLS[n].with_policy for n in protocols if PROTOCOLS[n].filename == split)
        check_records(dataset / split, with_policy)


TEXT_FIELDS = ("id", "task", "query", "answer", "response")  # what a prediction row is built and scored from


def check_records(path: Path, with_policy: bool = False) -> None:
    """Raise a one-line error (file:line: field) for a record that could not be scored, or whose images
    (or, with the policy in the prompt, policy file) are missing: a bad record stops the evaluation
    before anything is generated, not after."""
    root = path.parent
    policies: set[str] = set()
    for line, row in numbered_jsonl(path):
        for key in TEXT_FIELDS:
            if key not in row:
                raise DataError(f"{path}:{line}: missing field '{key}'")
            if not isinstance(row[key], str):
                raise DataError(f"{path}:{line}: field '{key}' must be text, got {json.dumps(row[key])[:40]}")
        images = row.get("images")
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise DataError(f"{path}:{line}: field 'images' must be a list of paths, got {json.dumps(images)[:40]}")
        for image in images:
            if not (root / image).is_file():
                raise DataError(f"{path}:{line}: field 'images': {os.path.normpath(root / image)} not found")
        check_code(row.get("answer_type"), f"{path}:{line}: field 'answer_type':")
        check_relative_paths(row, f"{path}:{line}")
        if with_policy:
            policy = row.get("policy_path")
            if not isinstance(policy, str) or not policy:
                raise DataError(f"{path}:{line}: field 'policy_path' is needed to put the policy in the prompt")
            if policy not in policies and not (root / policy).is_file():
                raise DataError(f"{path}:{line}: field 'policy_path': {root / policy} not found")
            policies.add(policy)


def check_code(spec: Any, where: str) -> None:
    """A record's answer type that names Python code must be one the user trusted (`trimpi.trust`)."""
    from trimpi.data.answers import CustomAnswer, parse_answer_type
    from trimpi.trust import require_trusted

    if spec is not None:
        try:
            kind = parse_answer_type(spec)
        except ConfigError as e:
            raise DataError(f"{where} {e}") from None
        if isinstance(kind, CustomAnswer):
            require_trusted(kind.spec, where)


def dataset_task(dataset: Path) -> str | None:
    """The task of the first record of test.jsonl ("clevr", "gta", ...), or None without one."""
    path = dataset / "test.jsonl"
    if not path.is_file():
        return None
    for row in iter_jsonl(path):
        return str(row.get("task"))
    return None
