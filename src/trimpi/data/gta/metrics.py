"""GTAPolicy metrics: tool accuracy, argument score, overall (SPEC §3); also the RL reward.

`score_tool_call(prediction, gold)` is total: any prediction string yields scores in
[0, 1] and never raises. Argument scores by type:

- exact:   image, position, color, k, top1 (whitespace/case-normalized strings; k as int;
           top1 as bool)
- text:    attribute, text, query, command, annotation, keywords, instruction (TextScorer)
- numeric: expression — both sides evaluated by the safe AST evaluator, then compared
- IoU:     bbox "(x1, y1, x2, y2)"
- other argument names: exact match of their canonical JSON.

A missing argument scores 0; extra arguments are ignored; a gold call without
arguments scores 1 on arguments.
"""

from __future__ import annotations

import json
import re
from typing import Any

from trimpi.data.gta.policy import BBOX_ARGS, EXACT_ARGS, NUMERIC_ARGS, TEXT_ARGS
from trimpi.data.gta.safe_eval import UnsafeExpression, numbers_equal, safe_eval
from trimpi.data.gta.scorers import TextScorer, lexical_scorer

MAX_PREDICTION_CHARS = 32_768
MAX_JSON_STARTS = 256
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_ZERO = {"tool": 0.0, "argument": 0.0, "overall": 0.0}


def _normalize_call(obj: Any) -> dict | None:
    """Accept {"name", "arguments"} and the OpenAI shapes {"function": {...}} / {"tool_calls": [...]}."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list) and obj["tool_calls"]:
        return _normalize_call(obj["tool_calls"][0])
    if isinstance(obj.get("function"), dict):
        return _normalize_call(obj["function"])
    name = obj.get("name")
    if not isinstance(name, str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (json.JSONDecodeError, RecursionError):
            args = {}
    if not isinstance(args, dict):
        args = {}
    return {"name": name.strip(), "arguments": args}


def parse_tool_call(text: str) -> dict | None:
    """The last JSON tool call in `text` ({"name": str, "arguments": dict}), or None.

    <think>…</think> blocks and prose around the JSON are ignored; inputs longer than
    MAX_PREDICTION_CHARS are cut to their last part. Never raises.
    """
    try:
        if not isinstance(text, str):
            return None
        text = _THINK.sub(" ", text[-4 * MAX_PREDICTION_CHARS :])
        if "</think>" in text:
            text = text.rsplit("</think>", 1)[1]
        text = text[-MAX_PREDICTION_CHARS:]
        decoder = json.JSONDecoder()
        found = None
        starts = [m.start() for m in re.finditer(r"\{", text)][:MAX_JSON_STARTS]
        pos_end = -1
        for start in starts:
            if start < pos_end:
                continue
            try:
                obj, end = decoder.raw_decode(text, start)
            except (json.JSONDecodeError, RecursionError, ValueError):
                continue
            call = _normalize_call(obj)
            if call is not None:
                found, pos_end = call, end
        return found
    except Exception:  # noqa: BLE001 - parsing must be total
        return None


# ---- per-type argument scores ------------------------------------------------------------


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _norm_exact(value: Any) -> str:
    return " ".join(_as_text(value).split()).lower()


def score_exact(name: str, pred: Any, gold: Any) -> float:
    """Exact match; k compared as integers, top1 as booleans, strings normalized."""
    if name == "k":
        p, g = _to_int(pred), _to_int(gold)
        return float(p is not None and p == g)
    if name == "top1":
        p, g = _to_bool(pred), _to_bool(gold)
        return float(p is not None and p == g)
    return float(_norm_exact(pred).replace(", ", ",") == _norm_exact(gold).replace(", ", ","))


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,9}\s*", value):
        return int(value)
    return None


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def score_expression(pred: Any, gold: Any) -> float:
    """1 if both expressions evaluate to the same number; if gold cannot be evaluated, exact match."""
    try:
        g = safe_eval(_as_text(gold))
    except UnsafeExpression:
        return score_exact("expression", pred, gold)
    try:
        return float(numbers_equal(safe_eval(_as_text(pred)), g))
    except UnsafeExpression:
        return 0.0


def parse_bbox(value: Any) -> tuple[float, float, float, float] | None:
    """A "(x1, y1, x2, y2)" string or a list of four numbers -> a box with x1 <= x2, y1 <= y2; else None."""
    nums = value if isinstance(value, list | tuple) else _NUMBER.findall(_as_text(value)[:200])
    if len(nums) != 4:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in nums)
    except (TypeError, ValueError):
        return None
    if any(v != v or abs(v) == float("inf") for v in (x1, y1, x2, y2)):
        return None
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; identical degenerate boxes give 1."""
    if a == b:
        return 1.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def score_bbox(pred: Any, gold: Any) -> float:
    p, g = parse_bbox(pred), parse_bbox(gold)
    if p is None or g is None:
        return 0.0
    return box_iou(p, g)


def score_argument(name: str, pred: Any, gold: Any, scorer: TextScorer) -> float:
    """Score one argument value in [0, 1] by the argument's type."""
    if name in EXACT_ARGS:
        return score_exact(name, pred, gold)
    if name in TEXT_ARGS:
        return min(1.0, max(0.0, float(scorer(_as_text(pred), _as_text(gold)))))
    if name in NUMERIC_ARGS:
        return score_expression(pred, gold)
    if name in BBOX_ARGS:
        return score_bbox(pred, gold)
    return float(_as_text(pred) == _as_text(gold))


def _gold_call(gold: str | dict) -> dict:
    call = _normalize_call(gold) if isinstance(gold, dict) else parse_tool_call(gold)
    if call is None:
        raise ValueError(f"gold is not a tool call: {str(gold)[:80]!r}")
    return call


def score_tool_call(prediction: str, gold: str | dict, scorer: TextScorer | None = None) -> dict[str, float]:
    """{"tool", "argument", "overall"} for one predicted call against the gold call.

    `tool` is exact match of the versioned name; `argument` the mean over the gold
    argument fields; `overall` = (tool + argument) / 2. Never raises on the prediction;
    raises ValueError only if `gold` is not a tool call.
    """
    g = _gold_call(gold)
    scorer = scorer or lexical_scorer()
    try:
        p = parse_tool_call(prediction)
        if p is None:
            return dict(_ZERO)
        tool = float(p["name"] == g["name"])
        gargs = g["arguments"]
        if not gargs:
            argument = 1.0
        else:
            per = [
                score_argument(k, p["arguments"][k], v, scorer) if k in p["arguments"] else 0.0
                for k, v in gargs.items()
            ]
            argument = sum(per) / len(per)
        return {"tool": tool, "argument": argument, "overall": (tool + argument) / 2}
    except Exception:  # noqa: BLE001 - a reward must never crash training
        return dict(_ZERO)


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    n = len(rows)
    return {k: (sum(r[k] for r in rows) / n if n else 0.0) for k in ("tool", "argument", "overall")}


def score_many(predictions: list[str], golds: list[str | dict], scorer: TextScorer | None = None) -> dict[str, Any]:
    """Mean tool / argument / overall over pairs, with n, the scorer's name and per-tool means."""
    from trimpi.data.gta.rules import base_tool

    scorer = scorer or lexical_scorer()
    rows = [score_tool_call(p, g, scorer) for p, g in zip(predictions, golds, strict=True)]
    by_tool: dict[str, list[dict[str, float]]] = {}
    for row, gold in zip(rows, golds, strict=True):
        by_tool.setdefault(base_tool(_gold_call(gold)["name"]), []).append(row)
    per_tool = {t: {**_means(r), "n": len(r)} for t, r in sorted(by_tool.items())}
    return {**_means(rows), "n": len(rows), "scorer": scorer.name, "per_tool": per_tool}
