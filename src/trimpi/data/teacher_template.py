"""Template reasoning traces: rule-citing traces built from the policy document and the gold answer, offline
and in seconds (`trimpi data cot --template`).

    summary = template_traces("data/mine")      # writes data/mine/train_cot.jsonl, labels it in the manifest

The policy text is cut into blocks (paragraphs and list items), each labelled by its own rule number
("1.", "R2", "Rule 3") and the heading it sits under. For a record, the blocks that name its gold answer
(as a whole word, case-insensitive) are the rules that can decide it; rule-like blocks (numbered, or with
"if" / "when" / "otherwise") are preferred. The trace quotes the sentence naming the answer:

    Policy Dock-Inspect, rule 1: "If the crate is red, the action is STOP." That rule gives STOP.

When several rules name the answer, the trace quotes each and says that the one which applies decides;
when none does, it says so. These traces do not look at the image: they teach the model to cite the
policy for its answer, not to check the rule's condition, and the manifest labels them
("traces": {"train_cot.jsonl": {"source": "template", ...}}) so that no report mistakes them for a
teacher's reasoning. Only answers that are a choice or an exact value can be cited this way.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimpi.data.answers import answer_type_of, unboxed
from trimpi.data.io import read_json, sha256_file, write_json, write_jsonl
from trimpi.data.schema import PolicyStore, Record, load_records
from trimpi.errors import DataError

SOURCE = "template"
CITABLE = ("exact", "choice", "clevr")  # answer types whose gold answer is a label a rule can name
QUOTE_CHARS = 220
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^\s*(?:[-*+]\s+)?(?:(\d+(?:\.\d+)*)[.)]|\*\*\s*((?:R|Rule\s*)\d+[a-z]?)\b[^*]*\*\*|"
                   r"((?:R|Rule\s*)\d+[a-z]?)[:.])\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*[-*+]\s+")
_CONDITION = re.compile(r"\b(if|when|unless|otherwise|else|whenever)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    rule: str | None  # "1", "R2", "Rule 3": the block's own label
    heading: str | None  # the heading the block sits under
    text: str

    @property
    def label(self) -> str:
        if self.rule:
            return f"rule {self.rule}" if self.rule[0].isdigit() else self.rule
        return f"the section {self.heading!r}" if self.heading else "the policy"

    @property
    def rule_like(self) -> bool:
        return self.rule is not None or bool(_CONDITION.search(self.text))


def policy_blocks(text: str) -> list[Block]:
    """The policy's paragraphs and list items, each with its rule label and heading."""
    blocks: list[Block] = []
    heading, rule, lines = None, None, []

    def flush():
        if lines:
            blocks.append(Block(rule, heading, " ".join(s.strip() for s in lines).strip()))
        lines.clear()

    for line in text.splitlines():
        m = _HEADING.match(line)
        if m:
            flush()
            heading, rule = m.group(2).strip("*_ "), None
            continue
        if not line.strip():
            flush()
            rule = None
            continue
        item = _ITEM.match(line)
        if item or _BULLET.match(line):
            flush()
            rule = next((g for g in item.groups() if g), None) if item else None
            line = line[item.end():] if item else _BULLET.sub("", line)
        lines.append(line)
    flush()
    return [b for b in blocks if b.text]


def _names(text: str, answer: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(answer)}(?![\w])", text, re.IGNORECASE) is not None


def quote(block: Block, answer: str) -> str:
    """The block's sentence that names the answer (the whole block if none alone does), cut to QUOTE_CHARS."""
    sentences = re.split(r"(?<=[.!?;])\s+(?=[A-Z`*\"(])", block.text)
    text = next((s for s in sentences if _names(s, answer)), block.text).replace("**", "").strip()
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1].rstrip() + "…"


def deciding_blocks(blocks: list[Block], answer: str) -> list[Block]:
    """The blocks that can decide `answer`: those naming it, rule-like ones first (only those when any)."""
    naming = [b for b in blocks if _names(b.text, answer)]
    rules = [b for b in naming if b.rule_like]
    return rules or naming


def trace(policy: str, blocks: list[Block], answer: str) -> tuple[str, str]:
    """(the reasoning text, how it cites: "one", "several" or "none")."""
    found = deciding_blocks(blocks, answer)
    if not found:
        return f"Policy {policy} names no rule for {answer}; the answer is {answer}.", "none"
    if len(found) == 1:
        b = found[0]
        return f'Policy {policy}, {b.label}: "{quote(b, answer)}" That rule gives {answer}.', "one"
    cited = "; ".join(f'{b.label}: "{quote(b, answer)}"' for b in found)
    return (f"Policy {policy}: the rules that give {answer} are {cited}"
            f"; the one that applies here decides: {answer}.", "several")


def template_record(record: Record, blocks: list[Block]) -> tuple[Record, str]:
    answer = unboxed(record.answer).strip()
    text, how = trace(record.policy or "", blocks, answer)
    row = record.to_dict()
    row.update(reasoning=text, split="train_cot")
    row["meta"] = {**record.meta, "teacher": {"model": SOURCE, "mode": SOURCE, "cites": how}}
    return Record.from_dict(row), how


def check_citable(records: list[Record], path: Path) -> None:
    for r in records:
        kind = answer_type_of(r).name
        if kind not in CITABLE:
            raise DataError(f"{path}: record {r.id}: answer type {kind!r} cannot be cited by a rule (template traces "
                            f"need {', '.join(CITABLE)} answers); use --teacher")


def label_in_manifest(data: Path, out: Path, summary: dict[str, Any]) -> None:
    """Record the traces file in DATA/manifest.json (source, counts, its SHA-256), when the dataset has one."""
    path = data / "manifest.json"
    if not path.is_file() or out.parent.resolve() != data.resolve():
        return
    manifest = read_json(path)
    manifest.setdefault("traces", {})[out.name] = {k: summary[k] for k in ("source", "records", "cites", "note")}
    if out.stem in ("train_cot",):
        manifest.setdefault("counts", {})["train_cot"] = summary["records"]
    manifest.setdefault("files", {})[out.name] = sha256_file(out)
    write_json(path, manifest)


def template_traces(data: str | Path, out: str | Path | None = None, split: str = "train",
                    overwrite: bool = False) -> dict[str, Any]:
    """Write a template trace for every record of DATA/<split>.jsonl to OUT (default DATA/train_cot.jsonl)."""
    data = Path(data)
    src = data / f"{split}.jsonl"
    if not src.is_file():
        raise DataError(f"{src}: file not found (pass --split, or a dataset directory)")
    out = Path(out) if out else data / "train_cot.jsonl"
    if out.is_file() and not overwrite and any(r.reasoning and (r.meta.get("teacher") or {}).get("model") != SOURCE
                                               for r in load_records(out)):
        raise DataError(f"{out}: holds reasoning traces that are not template traces (pass --overwrite to replace "
                        "them, or --out)")
    records = load_records(src)
    if not records:
        raise DataError(f"{src}: no records")
    check_citable(records, src)
    store = PolicyStore(data)
    blocks: dict[str, list[Block]] = {}
    rows, cites = [], Counter()
    for r in records:
        if r.policy_path not in blocks:
            blocks[r.policy_path] = policy_blocks(store.get(r).text) if r.policy_path else []
        rec, how = template_record(r, blocks[r.policy_path])
        rows.append(rec.to_dict())
        cites[how] += 1
    write_jsonl(out, rows)
    summary = {"source": SOURCE, "records": len(rows), "cites": dict(sorted(cites.items())), "out": str(out),
               "note": "template traces: each quotes the policy rule(s) naming the gold answer; they do not "
                       "look at the image"}
    label_in_manifest(data, out, summary)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    c = summary["cites"]
    return (f"wrote {summary['records']} template traces to {summary['out']}: {c.get('one', 0)} cite the one rule "
            f"naming the answer, {c.get('several', 0)} several, {c.get('none', 0)} none (labelled as template "
            "traces in the manifest; they quote the policy, they do not look at the image)")
