"""Read a GTA release (or the bundled sample): dataset.json, toolmeta.json, image files.

GTA's dataset.json is a dict of items: {"tools": [{"name"}], "files": [{"type", "path"}],
"dialogs": [user turn; assistant turns with "tool_calls": [{"function": {"name",
"arguments"}}]; tool turns {"role": "tool", "name", "content"}; final assistant answer],
"gt_answer"}. Every problem is reported as one DataError line naming the file and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.gta.policy import TOOL_NAMES
from trimpi.data.io import image_problem, read_json
from trimpi.errors import DataError

MAX_RESULT_CHARS = 800


@dataclass
class Call:
    """One reference tool call and the tool's result."""

    tool: str
    arguments: dict[str, Any]
    result: str = ""
    thought: str | None = None


@dataclass
class Item:
    """One GTA query with its reference tool chain."""

    id: str
    query: str
    images: list[str]
    calls: list[Call]
    answer: str = ""
    gt_answer: Any = None
    tools: list[str] = field(default_factory=list)


def result_text(content: Any) -> str:
    """A tool turn's content as short text (spaces collapsed, line breaks kept, long results cut); "" for none."""
    if content is None:
        return ""
    if isinstance(content, dict) and "content" in content:
        kind = content.get("type", "text")
        body = content["content"]
        text = f"[{kind}] {body}" if kind != "text" else str(body)
    elif isinstance(content, str):
        text = content
    else:
        import json

        text = json.dumps(content, ensure_ascii=False, sort_keys=True)
    text = "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    return text if len(text) <= MAX_RESULT_CHARS else text[: MAX_RESULT_CHARS - 3] + "..."


def _produced_image(content: Any) -> str | None:
    """Path of an image a tool returned, if any (later calls may use it)."""
    if isinstance(content, dict) and content.get("type") == "image" and isinstance(content.get("content"), str):
        return content["content"]
    return None


def _shown(value: Any) -> str:
    """A JSON value as the user wrote it (null, not None)."""
    import json

    return json.dumps(value, ensure_ascii=False, default=str)[:60]


def _check_tool(name: Any, where: str) -> str:
    if name not in TOOL_NAMES:
        raise DataError(f"{where}: unknown tool {name!r} (known: {', '.join(TOOL_NAMES)})")
    return name


def _parse_call(raw: Any, where: str) -> tuple[str, dict[str, Any]]:
    fn = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(fn, dict):
        raise DataError(f"{where}: expected {{'function': {{'name', 'arguments'}}}}")
    name = _check_tool(fn.get("name"), f"{where}.function.name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        import json

        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            raise DataError(f"{where}.function.arguments: malformed JSON string") from None
    if not isinstance(args, dict):
        raise DataError(f"{where}.function.arguments: expected an object")
    return name, args


def parse_item(qid: str, raw: Any, image_root: Path, where: str) -> Item:
    """Validate and convert one dataset.json item; `where` names the file for errors."""
    at = f"{where}: item {qid!r}"
    if not isinstance(raw, dict):
        raise DataError(f"{at}: expected an object")
    for key in ("files", "dialogs"):
        if not isinstance(raw.get(key), list):
            raise DataError(f"{at} field {key}: missing or not a list")
    tools = [
        _check_tool(t.get("name") if isinstance(t, dict) else t, f"{at} field tools") for t in raw.get("tools", [])
    ]
    images = []
    for j, f in enumerate(raw["files"]):
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            raise DataError(f"{at} field files[{j}].path: missing")
        if Path(f["path"]).is_absolute() or ".." in Path(f["path"]).parts:
            raise DataError(f"{at} field files[{j}].path: {f['path']!r} must be relative to the release, without '..'")
        if f.get("type", "image") == "image":
            if not (image_root / f["path"]).is_file():
                raise DataError(f"{at} field files[{j}].path: image {f['path']} not found under {image_root}")
            problem = image_problem(image_root / f["path"])
            if problem:
                raise DataError(f"{at} field files[{j}].path: image {f['path']} cannot be decoded ({problem})")
            images.append(f["path"])
    known_images = set(images)
    query, calls, answer, pending = "", [], "", []
    for i, turn in enumerate(raw["dialogs"]):
        tw = f"{at} field dialogs[{i}]"
        if not isinstance(turn, dict):
            raise DataError(f"{tw}: expected an object")
        role = turn.get("role")
        if role == "user" and not query:
            query = turn.get("content")
            if not isinstance(query, str) or not query.strip():
                raise DataError(f"{tw}.content: expected the user's query as text, got {_shown(query)}")
        elif role == "assistant" and turn.get("tool_calls"):
            for c, rc in enumerate(turn["tool_calls"]):
                name, args = _parse_call(rc, f"{tw}.tool_calls[{c}]")
                image = args.get("image")
                if "image" in args and image not in known_images:
                    field = f"{tw}.tool_calls[{c}].function.arguments.image"
                    raise DataError(f"{field} ({name}): {image!r} is not a file of this item")
                call = Call(name, args, thought=turn.get("thought"))
                calls.append(call)
                pending.append(call)
        elif role == "tool":
            if pending:
                pending.pop(0).result = result_text(turn.get("content"))
            produced = _produced_image(turn.get("content"))
            if produced:
                known_images.add(produced)
        elif role == "assistant":
            content = turn.get("content")
            answer = "" if content is None else str(content)
    if not query:
        raise DataError(f"{at} field dialogs: no user turn")
    return Item(qid, query, images, calls, answer, raw.get("gt_answer"), tools)


def check_toolmeta(path: Path) -> None:
    """toolmeta.json (optional): every tool it names must be a known GTA tool."""
    if not path.exists():
        return
    meta = read_json(path)
    names = list(meta) if isinstance(meta, dict) else [m.get("name") for m in meta if isinstance(m, dict)]
    for name in names:
        _check_tool(name, f"{path}: field name")


def load_gta(dataset_dir: str | Path, image_root: str | Path | None = None) -> list[Item]:
    """Items of `dataset_dir/dataset.json`, sorted by id; image paths resolve under `image_root`."""
    dataset_dir = Path(dataset_dir)
    image_root = Path(image_root) if image_root is not None else dataset_dir
    path = dataset_dir / "dataset.json"
    if not dataset_dir.is_dir():
        raise DataError(f"{dataset_dir}: GTA directory not found")
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object of items keyed by id")
    if not data:
        raise DataError(f"{path}: no items (expected an object of items keyed by id)")
    check_toolmeta(dataset_dir / "toolmeta.json")
    items = [parse_item(str(qid), raw, image_root, str(path)) for qid, raw in data.items()]
    return sorted(items, key=lambda it: (len(it.id), it.id))
