"""Rows → examples: column mapping, and the TRL conversational formats.

A row is read in one of three shapes (the first that applies):

- `messages` (TRL conversational): a list of {"role", "content"} turns, content a string or
  blocks ({"type": "text", "text"}, {"type": "image"} taking the next file of the `images`
  column, or {"type": "image", "image" | "path": FILE}). The last assistant turn is the answer;
  the user turn before it is the query; earlier turns are the interaction history. System turns
  are dropped: the policy comes from the policy document.
- `prompt` + `completion` (TRL prompt-completion): strings or lists of turns, read as above.
- columns: `query`, `answer`, and optional `images`, `reasoning`, `response`, `history`
  (earlier turns, as `messages`).

Every record field can be read from another column (`--column field=column`). Columns no field
uses are kept in the record's `meta`. As in GTAPolicy records, the interaction history is
written into the query text ("Interaction history so far: ...", tool calls as `Call:` / `Result:`
lines) and its images come first in `images`; the turns themselves are kept in meta["history"].
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from trimpi.data.answers import THINK_CLOSE, THINK_OPEN, extract_boxed
from trimpi.data.imports.readers import Row
from trimpi.errors import DataError

FIELDS = ("id", "query", "images", "answer", "response", "reasoning", "split", "policy", "answer_type",
          "task", "scene", "meta", "group", "history", "messages", "prompt", "completion")
_THINK = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.DOTALL)
_MARK = re.compile(r"\[image \d+\] ?")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageRef:
    """An image as a row gives it: a path (relative to the row's base directory) or embedded bytes."""

    path: str | None = None
    data: bytes | None = None


@dataclass
class Example:
    where: str
    base: Any  # pathlib.Path: directory relative paths are resolved against
    query: str
    answer: str
    response: str | None = None
    reasoning: str | None = None
    images: list[ImageRef] = field(default_factory=list)
    id: str | None = None
    split: str | None = None
    policy: str | None = None
    answer_type: str | dict[str, Any] | None = None
    task: str | None = None
    scene: str | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def parse_mapping(items: list[str]) -> dict[str, str]:
    """`--column field=column` options → {field: column}."""
    mapping: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise DataError(f"--column {item!r}: expected FIELD=COLUMN such as query=question")
        key, col = (s.strip() for s in item.split("=", 1))
        if key not in FIELDS:
            raise DataError(f"--column {item!r}: unknown field {key!r} (expected one of {', '.join(FIELDS)})")
        if not col:
            raise DataError(f"--column {item!r}: empty column name")
        mapping[key] = col
    return mapping


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(row: Row, name: str, value: Any, required: bool = False) -> str | None:
    if _empty(value):
        if required:
            raise row.error(name, "missing or empty")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise row.error(name, f"expected text, got {type(value).__name__}")
    return value


def _json_value(row: Row, name: str, value: Any) -> Any:
    """A list/dict column that a CSV cell holds as JSON text."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise row.error(name, f"malformed JSON ({e.msg})") from None
    return value


def image_ref(row: Row, name: str, value: Any) -> ImageRef:
    if isinstance(value, str) and value.strip():
        return ImageRef(path=value.strip())
    if isinstance(value, dict):
        if value.get("bytes"):
            return ImageRef(data=bytes(value["bytes"]))
        if isinstance(value.get("path"), str) and value["path"]:
            return ImageRef(path=value["path"])
    if hasattr(value, "save") and hasattr(value, "mode"):  # a decoded PIL image
        import io

        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return ImageRef(data=buf.getvalue())
    raise row.error(name, f"expected an image path or {{'bytes', 'path'}}, got {str(value)[:60]!r}")


def image_list(row: Row, name: str, value: Any) -> list[ImageRef]:
    """A path, a list of paths / image dicts, or (CSV) a JSON list or ';'-separated paths."""
    if _empty(value):
        return []
    value = _json_value(row, name, value)
    if isinstance(value, str):
        value = [p for p in value.split(";") if p.strip()]
    if isinstance(value, dict) or not isinstance(value, (list, tuple)):
        value = [value]
    return [image_ref(row, name, v) for v in value]


def answer_text(row: Row, name: str, value: Any) -> str:
    """The answer as text; a JSON object (a tool call) is written as compact JSON."""
    value = _json_value(row, name, value) if isinstance(value, str) and value.strip()[:1] == "{" else value
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return _text(row, name, value, required=True)


# --- conversations -------------------------------------------------------------------------------


def _blocks(row: Row, name: str, content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise row.error(name, "a turn's 'content' must be a string or a list of content blocks")


def _turn(row: Row, name: str, msg: Any, images: list[ImageRef], queue: list[ImageRef]) -> dict[str, Any]:
    """One turn as {"role", "text", "tool_calls"}, its images appended to `images` ("[image k]" in the text)."""
    if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
        raise row.error(name, "each turn must be an object with a 'role'")
    parts = []
    for block in _blocks(row, name, msg.get("content")):
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text") or ""))
        elif kind in ("image", "image_url"):
            src = block.get("image") or block.get("path") or (block.get("image_url") or {}).get("url")
            if src is None:
                if not queue:
                    raise row.error(name, "more {'type': 'image'} blocks than files in the images column")
                images.append(queue.pop(0))
            else:
                images.append(image_ref(row, name, src))
            parts.append(f"[image {len(images)}]")
        else:
            raise row.error(name, f"unknown content block type {kind!r} (expected text or image)")
    return {"role": msg["role"], "text": "".join(parts).strip(), "tool_calls": msg.get("tool_calls"),
            "name": msg.get("name")}


def tool_call_json(row: Row, name: str, calls: Any) -> str:
    """The one tool call of an assistant turn as {"name", "arguments"} JSON (OpenAI / TRL tool_calls)."""
    if not isinstance(calls, list) or len(calls) != 1:
        raise row.error(name, "the assistant turn to learn must make exactly one tool call")
    call = calls[0].get("function", calls[0]) if isinstance(calls[0], dict) else None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise row.error(name, "a tool call needs a 'name' (and 'arguments')")
    args = call.get("arguments") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            raise row.error(name, f"tool call arguments are not JSON ({e.msg})") from None
    return json.dumps({"name": call["name"], "arguments": args}, ensure_ascii=False)


def history_text(turns: list[dict[str, Any]]) -> str:
    """Earlier turns written out like GTAPolicy's history (calls and results on their own lines)."""
    lines = ["Interaction history so far:"]
    for t in turns:
        role = t["role"]
        if role == "assistant" and t["tool_calls"]:
            for call in t["tool_calls"]:
                fn = call.get("function", call) if isinstance(call, dict) else {}
                call_json = json.dumps({"name": fn.get("name"), "arguments": fn.get("arguments")}, ensure_ascii=False)
                lines.append(f"Assistant call: {call_json}")
            if t["text"]:
                lines.append(f"Assistant: {t['text']}")
        elif role == "tool":
            lines.append(f"Result{' of ' + t['name'] if t['name'] else ''}: {t['text']}")
        else:
            lines.append(f"{role.capitalize()}: {t['text']}")
    return "\n".join(lines)


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning inside <think>…</think> or None, the text after it)."""
    m = _THINK.search(text)
    if not m:
        return None, text.strip()
    return m.group(1).strip() or None, text[m.end():].strip()


def conversation(row: Row, name: str, messages: Any, queue: list[ImageRef]) -> dict[str, Any]:
    """query, answer, response, reasoning, images and history of a TRL conversation."""
    messages = _json_value(row, name, messages)
    if not isinstance(messages, list) or not messages:
        raise row.error(name, "expected a non-empty list of turns")
    images: list[ImageRef] = []
    turns = [_turn(row, name, m, images, queue) for m in messages]
    turns = [t for t in turns if t["role"] != "system"]
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last is None:
        raise row.error(name, "no assistant turn (the last assistant message is the answer to learn)")
    if last != len(turns) - 1:
        raise row.error(name, f"ends with a {turns[-1]['role']} turn after the last assistant turn "
                              "(the answer must be the last message)")
    user = max((i for i in range(last) if turns[i]["role"] == "user"), default=None)
    if user is None:
        raise row.error(name, "no user turn before the assistant answer")
    # images shown before the query belong to the history; they still come first, as render_messages shows them
    answer_turn = turns[last]
    if answer_turn["tool_calls"]:
        reasoning, _ = split_reasoning(answer_turn["text"])
        answer = response = tool_call_json(row, name, answer_turn["tool_calls"])
        answer_type = "tool_call"
    else:
        reasoning, response = split_reasoning(answer_turn["text"])
        if not response:
            raise row.error(name, "the last assistant turn is empty")
        answer, answer_type = extract_boxed(response) or response, None
        if answer == response:
            response = None  # written by the answer type's rule (build.response_for)
    history = turns[:user]
    query = _MARK.sub("", turns[user]["text"]).strip()  # the query's own images are shown just before it
    if history:
        query = f"{history_text(history)}\n\n{query}"
    return {"query": query, "answer": answer, "response": response, "reasoning": reasoning, "images": images,
            "answer_type": answer_type,
            "history": [{k: v for k, v in t.items() if v is not None} for t in history]}


# --- rows -> examples ----------------------------------------------------------------------------


def _meta(row: Row, name: str, value: Any) -> dict[str, Any]:
    value = _json_value(row, name, value)
    if _empty(value):
        return {}
    if not isinstance(value, dict):
        raise row.error(name, "expected a JSON object")
    return value


def to_example(row: Row, mapping: dict[str, str]) -> Example:
    """One row as an Example; every problem is a DataError naming the row and the field."""
    col = {f: mapping.get(f, f) for f in FIELDS}
    v = row.values
    used = set()

    def get(f: str) -> Any:
        used.add(col[f])
        return v.get(col[f])

    queue = image_list(row, col["images"], get("images"))
    if col["messages"] in v:
        conv = conversation(row, col["messages"], get("messages"), queue)
    elif col["prompt"] in v and col["completion"] in v:
        prompt, completion = get("prompt"), get("completion")
        prompt = _json_value(row, col["prompt"], prompt)
        completion = _json_value(row, col["completion"], completion)
        turns = (prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]) + \
            (completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}])
        conv = conversation(row, f"{col['prompt']}+{col['completion']}", turns, queue)
    else:
        conv = None
    if conv is not None:
        if queue:
            conv["images"] = queue + conv["images"]  # files with no {"type": "image"} block: shown first
        ex = Example(row.where, row.base, conv["query"], conv["answer"], conv["response"], conv["reasoning"],
                     conv["images"], answer_type=conv["answer_type"])
        if conv["history"]:
            ex.meta["history"] = conv["history"]
    else:
        if col["query"] not in v and col["answer"] not in v:
            raise DataError(f"{row.where}: no '{col['query']}'/'{col['answer']}' columns and no 'messages' or "
                            f"'prompt'+'completion' (columns: {', '.join(sorted(v))[:120]}); map them with "
                            f"--column query=COLUMN --column answer=COLUMN")
        query = _text(row, col["query"], get("query"), required=True)
        images: list[ImageRef] = []  # the history's images come first, as the conversation showed them
        history = _json_value(row, col["history"], get("history"))
        if not _empty(history):
            if not isinstance(history, list):
                raise row.error(col["history"], "expected a list of turns like 'messages'")
            turns = [_turn(row, col["history"], m, images, []) for m in history]
            turns = [t for t in turns if t["role"] != "system"]
            query = f"{history_text(turns)}\n\n{query}"
        images += queue
        answer = get("answer")
        if _empty(answer):
            raise row.error(col["answer"], "missing or empty (every example needs its expected answer)")
        ex = Example(row.where, row.base, query, answer_text(row, col["answer"], answer),
                     _text(row, col["response"], get("response")), _text(row, col["reasoning"], get("reasoning")),
                     images)
        if not _empty(history):
            ex.meta["history"] = history
    ex.id = _text(row, col["id"], get("id"))
    ex.split = _text(row, col["split"], get("split")) or row.split
    ex.policy = _text(row, col["policy"], get("policy"))
    declared = get("answer_type")
    ex.answer_type = ex.answer_type if _empty(declared) else declared
    ex.task = _text(row, col["task"], get("task"))
    ex.scene = _text(row, col["scene"], get("scene"))
    ex.group = _text(row, col["group"], get("group"))
    ex.meta = {**_meta(row, col["meta"], get("meta")), **ex.meta}
    used.add("policy_path")  # recomputed from the policy name
    for key, value in v.items():
        if key not in used and key not in ex.meta and not _empty(value):
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise row.error(key, f"column {key!r} holds {type(value).__name__} values that are not JSON; "
                                     "drop it or map it with --column") from None
            ex.meta[key] = value
    return ex


def column_problem(row: Row, mapping: dict[str, str]) -> str | None:
    """What is wrong with a file's columns (its first row's), blamed on the header: a plain-shape file
    must have the query and answer columns. None when the columns fit."""
    col = {f: mapping.get(f, f) for f in FIELDS}
    have = list(row.values)
    if col["messages"] in have or (col["prompt"] in have and col["completion"] in have):
        return None
    missing = [f for f in ("query", "answer") if col[f] not in have]
    if not missing or not have:
        return None
    parts = []
    for f in missing:
        close = difflib.get_close_matches(col[f], have, n=1, cutoff=0.6)
        fix = f"--column {f}={close[0] if close else 'COLUMN'}"
        parts.append(f"no column {col[f]!r} for field '{f}'" + (f" (did you mean {close[0]!r}?)" if close else "")
                     + f": rename it in the header or pass {fix}")
    return f"header: {'; '.join(parts)}; the file's columns are {', '.join(have)[:200]}"


def unmapped_image_column(ex: Example) -> str | None:
    """The first column kept in meta whose value names an existing image file (relative to the row's base)."""
    from pathlib import Path

    for key, value in ex.meta.items():
        if key == "history" or not isinstance(value, str):
            continue
        paths = [p.strip() for p in value.split(";") if p.strip()]
        if paths and all(p.lower().endswith(IMAGE_SUFFIXES) and (Path(ex.base) / p).is_file() for p in paths):
            return key
    return None
