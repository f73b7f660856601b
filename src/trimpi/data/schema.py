"""The example record shared by every dataset, and its two chat renderings (with / without policy).

A record is one JSON object per JSONL line. Paths are relative to the dataset directory
(the directory holding the JSONL file) unless stated otherwise.

    id           unique string
    task         "clevr" | "gta" | "general"   (decides how answers are scored)
    split        "train" | "train_cot" | "test" | "override_test" | "general_test"
    policy       policy name cited by the query, or null when no policy governs it
    policy_path  path of the policy JSON this record follows, or null
    images       list of image paths, in the order the query shows them
    scene        scene-graph JSON path (ClevrPolicy) or null
    query        user text without the policy
    answer       canonical answer ("Case 3"; a tool call as JSON; "yes")
    response     the answer as the model must write it ("\\boxed{Case 3}"; the JSON call)
    reasoning    gold reasoning (without the <think> tags) or null
    meta         free-form details (tree path, profile, ...)
    answer_type  optional: how the answer is scored ("numeric", {"type": "choice", "options": [...]},
                 "pkg.mod:fn"; see trimpi.data.answers); absent: by task (clevr, gta → tool_call, else exact)

A policy JSON holds at least {"name", "text", "images"}; `images` paths are relative to the
policy file's own directory and appear in `text` at each IMAGE_MARKER, in order.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trimpi.data.answers import THINK_CLOSE, THINK_OPEN, parse_answer_type
from trimpi.data.io import iter_jsonl, read_json
from trimpi.errors import ConfigError, DataError

IMAGE_MARKER = "<image>"
POLICY_PLACEMENTS = ("system", "user")

REQUIRED_FIELDS = ("id", "task", "images", "query", "answer", "response")
TEXT_FIELDS = ("id", "task", "query", "answer", "response")


PATH_FIELDS = ("images", "scene", "policy_path")


def check_relative_paths(row: dict[str, Any], where: str) -> None:
    """A record names its files relative to its dataset (`trimpi.trust`): an absolute path (a downloaded
    dataset pointing at ~/.ssh or /etc) is a one-line error naming the field."""
    for key in PATH_FIELDS:
        value = row.get(key)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and (path.startswith(("/", "~", "\\")) or ":" in path[:3]):
                raise DataError(f"{where}: field '{key}': {path!r} is an absolute path; a dataset names its files "
                                "relative to its own folder")


@dataclass
class Record:
    id: str
    task: str
    query: str
    answer: str
    response: str
    images: list[str] = field(default_factory=list)
    split: str = ""
    policy: str | None = None
    policy_path: str | None = None
    scene: str | None = None
    reasoning: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    answer_type: str | dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        if row["answer_type"] is None:  # records of the task's default type keep their old shape
            del row["answer_type"]
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any], where: str = "record") -> Record:
        for key in REQUIRED_FIELDS:
            if key not in row:
                raise DataError(f"{where}: missing field '{key}'")
        if not isinstance(row["images"], list):
            raise DataError(f"{where}: field 'images' must be a list of paths")
        for key in TEXT_FIELDS:  # a number or null would be trained on as the text "3" or "None"
            if not isinstance(row[key], str):
                raise DataError(f"{where}: field '{key}' must be text, got {json.dumps(row[key])[:40]}")
        check_relative_paths(row, where)
        if row.get("answer_type") is not None:
            try:
                parse_answer_type(row["answer_type"], row["task"])
            except ConfigError as e:
                raise DataError(f"{where}: field 'answer_type': {e}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in known})

    def target(self, with_reasoning: bool = True) -> str:
        """The assistant text a model is trained to produce."""
        if with_reasoning and self.reasoning:
            return f"{THINK_OPEN}{self.reasoning}{THINK_CLOSE}\n{self.response}"
        return self.response


@dataclass
class Policy:
    name: str
    text: str
    images: list[Path]  # absolute paths, in the order of IMAGE_MARKER in text
    raw: dict[str, Any]


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    data = read_json(path)
    for key in ("name", "text", "images"):
        if key not in data:
            raise DataError(f"{path}: missing field '{key}'")
    images = [path.parent / p for p in data["images"]]
    if data["text"].count(IMAGE_MARKER) != len(images):
        raise DataError(
            f"{path}: field 'text' has {data['text'].count(IMAGE_MARKER)} {IMAGE_MARKER} markers "
            f"but 'images' lists {len(images)}"
        )
    return Policy(name=data["name"], text=data["text"], images=images, raw=data)


def load_records(path: str | Path) -> list[Record]:
    path = Path(path)
    return [Record.from_dict(row, where=f"{path}:{i + 1}") for i, row in enumerate(iter_jsonl(path))]


def dataset_texts(data: str | Path) -> list[str]:
    """Every text of a dataset directory (queries, targets, policies): tokenizer training material."""
    root = Path(data)
    texts: list[str] = []
    for path in sorted(root.glob("*.jsonl")):
        for r in load_records(path):
            texts += [r.query, r.response, r.reasoning or "", r.answer]
    for path in sorted((root / "policies").glob("*.json")) if (root / "policies").is_dir() else []:
        texts.append(load_policy(path).text)
    return [t for t in texts if t]


def _text_and_images(text: str, images: list[Path]) -> list[dict[str, Any]]:
    """Split text at IMAGE_MARKER into interleaved text / image content blocks."""
    parts = text.split(IMAGE_MARKER)
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        if part:
            blocks.append({"type": "text", "text": part})
        if i < len(images):
            blocks.append({"type": "image", "path": str(images[i])})
    return blocks


Placement = Literal["system", "user"]


def render_messages(
    record: Record,
    root: str | Path,
    policy: Policy | None = None,
    placement: Placement = "system",
    with_target: bool = False,
    with_reasoning: bool = True,
) -> list[dict[str, Any]]:
    """Render a record as Hugging Face chat messages, with or without its policy.

    Images are content blocks {"type": "image", "path": ...} (absolute paths). With a policy,
    `placement="system"` puts the policy (text and images) in a system turn; `"user"` puts it
    at the start of the user turn, before the query's images.
    """
    if placement not in POLICY_PLACEMENTS:
        raise ValueError(f"placement must be one of {POLICY_PLACEMENTS}, got {placement!r}")
    root = Path(root)
    query_blocks = [{"type": "image", "path": str(root / p)} for p in record.images]
    query_blocks.append({"type": "text", "text": record.query})
    messages: list[dict[str, Any]] = []
    if policy is not None:
        policy_blocks = _text_and_images(policy.text, policy.images)
        if placement == "system":
            messages.append({"role": "system", "content": policy_blocks})
        else:
            query_blocks = policy_blocks + [{"type": "text", "text": "\n\n"}] + query_blocks
    messages.append({"role": "user", "content": query_blocks})
    if with_target:
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": record.target(with_reasoning)}]}
        )
    return messages


def message_images(messages: list[dict[str, Any]]) -> list[str]:
    """Image paths of the messages' image blocks, in order of appearance."""
    return [b["path"] for m in messages for b in m["content"] if b.get("type") == "image"]


def most_prompt_images(records: Iterable[Record], store: PolicyStore | None = None) -> int:
    """The most images one prompt of `records` shows: the record's own, plus its policy's when rendered
    with `store` (0 for no records). A vLLM engine must be started with room for that many."""
    return max((len(r.images) + (len(store.get(r).images) if store is not None and r.policy_path else 0)
                for r in records), default=0)


class PolicyStore:
    """Loads each policy JSON once per dataset directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._cache: dict[str, Policy] = {}

    def get(self, record: Record) -> Policy:
        if not record.policy_path:
            raise DataError(f"record {record.id}: no 'policy_path' to render it with its policy")
        if record.policy_path not in self._cache:
            self._cache[record.policy_path] = load_policy(self.root / record.policy_path)
        return self._cache[record.policy_path]
