"""Policy documents → policies as `schema.Policy` expects them (text with IMAGE_MARKERs + images in order).

A policy document is one of

- Markdown or plain text. Images are Markdown images `![alt](path)` (the reference becomes an
  IMAGE_MARKER) and/or `<image>` markers whose files are listed, in order, under `images:` in a
  YAML front matter. The front matter may also give the `name`:

      ---
      name: returns-desk
      images: [examples/cracked.png]
      ---
      # Returns desk policy
      A cracked screen looks like this: <image>

- A policy JSON (`{"name", "text", "images", ...}`, as trimpi writes them); extra keys are kept.

Image paths are relative to the document's directory. The policy's name comes from the
option (`NAME=FILE`), else `--name` (one policy), else the front matter / JSON, else the document's first
heading (as a name: "# Dock-Inspect" → Dock-Inspect), else the file name without its extension.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trimpi.data.io import inside
from trimpi.data.schema import IMAGE_MARKER
from trimpi.errors import DataError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FRONT = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


@dataclass
class PolicyDoc:
    name: str
    text: str
    images: list[Path]  # absolute source paths, in the order of IMAGE_MARKER in text
    source: Path
    extra: dict[str, Any] = field(default_factory=dict)  # other keys of a policy JSON (kept in the output)


def check_name(name: str, where: str) -> str:
    if not NAME_RE.match(name or ""):
        raise DataError(f"{where}: policy name {name!r} must be letters, digits, '.', '_' or '-' "
                        "(it names a file)")
    return name


def parse_spec(spec: str) -> tuple[str | None, Path]:
    """`NAME=FILE` or `FILE` (a '=' inside an existing file's path is not a name)."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        return name.strip(), Path(path)
    return None, Path(spec)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _resolve(src: str, base: Path, where: str, root: Path | None = None) -> Path:
    if re.match(r"^[a-z][a-z0-9+.-]*://", src, re.IGNORECASE):
        raise DataError(f"{where}: image {src!r} is a URL; trimpi downloads nothing — save it next to the policy")
    path = inside(root or base, src, f"{where}: image", base=base)  # in the policy's folder (`trimpi.trust`)
    if not path.is_file():
        raise DataError(f"{where}: image {src!r} not found (looked for {path})")
    return path


def _front_matter(text: str, path: Path) -> tuple[dict[str, Any], str, int]:
    """(front matter mapping, body, number of lines before the body)."""
    m = _FRONT.match(text)
    if not m:
        return {}, text, 0
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: front matter is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: front matter must be a mapping (name:, images:)")
    unknown = set(meta) - {"name", "images"}
    if unknown:
        raise DataError(f"{path}: front matter: unknown key {sorted(unknown)[0]!r} (expected name, images)")
    return meta, text[m.end():], m.group(0).count("\n")


def parse_markdown(text: str, path: Path) -> tuple[str | None, str, list[Path]]:
    """(name from the front matter, text with IMAGE_MARKERs, images in marker order)."""
    meta, body, offset = _front_matter(text, path)
    listed = meta.get("images") or []
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise DataError(f"{path}: front matter 'images' must be a list of file paths")
    queue = list(listed)
    images: list[Path] = []
    out: list[str] = []
    pos = 0
    pattern = re.compile(_MD_IMAGE.pattern + "|" + re.escape(IMAGE_MARKER))
    for m in pattern.finditer(body):
        out.append(body[pos:m.start()])
        where = f"{path}:{_line_of(body, m.start()) + offset}"
        if m.group(0) == IMAGE_MARKER:
            if not queue:
                raise DataError(f"{where}: {IMAGE_MARKER} marker number {len(listed) + 1 - len(queue)} has no file "
                                f"(the front matter 'images' lists {len(listed)})")
            images.append(_resolve(queue.pop(0), path.parent, where))
        else:
            images.append(_resolve(m.group(1), path.parent, where))
        out.append(IMAGE_MARKER)
        pos = m.end()
    out.append(body[pos:])
    if queue:
        raise DataError(f"{path}: front matter 'images' lists {len(listed)} files but the text has only "
                        f"{len(listed) - len(queue)} {IMAGE_MARKER} markers")
    return meta.get("name"), "".join(out).strip() + "\n", images


def parse_json_policy(path: Path) -> tuple[str | None, str, list[Path], dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise DataError(f"{path}: a policy JSON needs a string field 'text'")
    listed = data.get("images", [])
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise DataError(f"{path}: field 'images' must be a list of file paths")
    if data["text"].count(IMAGE_MARKER) != len(listed):
        raise DataError(f"{path}: field 'text' has {data['text'].count(IMAGE_MARKER)} {IMAGE_MARKER} markers "
                        f"but 'images' lists {len(listed)}")
    # a policy JSON lies one level below its dataset (policies/NAME.json, images in ../images/)
    images = [_resolve(p, path.parent, f"{path}: field 'images'", path.parent.parent) for p in listed]
    extra = {k: v for k, v in data.items() if k not in ("name", "text", "images")}
    return data.get("name"), data["text"], images, extra


def heading_name(text: str) -> str | None:
    """The document's first Markdown heading as a policy name (runs of other characters become '-'), or None."""
    m = _HEADING.search(text)
    if not m:
        return None
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", m.group(1)).strip("-._")[:100]
    return name or None


def load_policy_doc(spec: str, default_name: str | None = None) -> PolicyDoc:
    """Parse one `--policy NAME=FILE` (or `FILE`) into a PolicyDoc; `default_name` (`--name`) beats the file's own."""
    name, path = parse_spec(spec)
    if not path.is_file():
        raise DataError(f"{path}: policy document not found")
    path = path.resolve()
    extra: dict[str, Any] = {}
    heading = None
    if path.suffix.lower() == ".json":
        doc_name, text, images, extra = parse_json_policy(path)
    else:
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}: a policy document must be UTF-8 Markdown or text") from None
        doc_name, text, images = parse_markdown(raw, path)
        heading = heading_name(text)
    if not text.strip():
        raise DataError(f"{path}: the policy text is empty")
    final = name or default_name or doc_name or heading or path.stem
    return PolicyDoc(check_name(str(final), str(path)), text, images, path, extra)


def load_policy_docs(specs: list[str], what: str = "--policy", default_name: str | None = None) -> dict[str, PolicyDoc]:
    """Policies by name; two documents with one name is an error. `default_name` names a lone document."""
    docs: dict[str, PolicyDoc] = {}
    for spec in specs:
        doc = load_policy_doc(spec, default_name if len(specs) == 1 else None)
        if doc.name in docs:
            raise DataError(f"{what}: two documents are named {doc.name!r} ({docs[doc.name].source}, {doc.source}); "
                            "give one a name with NAME=FILE")
        docs[doc.name] = doc
    return docs


_BARE = re.compile(  # a sentence that asks for the answer alone: "Answer with the action word only", "Reply only with ..."
    r"\b(answer|reply|respond|output|write|return|say)\b[^.!?\n]{0,80}?"
    r"\b(only|just|nothing else|no other (text|words?)|alone|single word)\b", re.IGNORECASE)


def bare_answer_sentences(doc: PolicyDoc) -> list[tuple[int, str]]:
    """(line, sentence) of each sentence in the policy asking for a bare answer (no markup around it)."""
    found = []
    for n, line in enumerate(doc.text.splitlines(), 1):
        for sentence in re.split(r"(?<=[.!?])\s+", line):
            if _BARE.search(sentence) and "boxed" not in sentence.lower():
                found.append((n, sentence.strip().lstrip("-*# ").strip()))
    return found
