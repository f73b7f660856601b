"""Answer types: how one kind of answer is read from a completion and scored against the gold answer.

Each type turns (completion, record) into a `Scored`: a score in [0, 1], the parsed prediction
(None when the completion holds no answer of that type) and type-specific details.

    clevr       ClevrPolicy case id: the last \\boxed{} after the reasoning, exact after strip
    exact       \\boxed{} match after normalisation (ignore_case, collapse_whitespace, strip_period; all on)
    choice      multiple choice: a letter ("B", "(b)", "B) red") or an option's text; `options` optional
    numeric     a number within abs_tol / rel_tol of the gold number (|p - g| <= max(abs_tol, rel_tol·|g|))
    tool_call   GTAPolicy: the last JSON call, tool / argument / overall (overall is the score)
    judge       free-form reply after the reasoning, rated by an injected judge (policy + rubric)
    mod:fn      your own: fn(completion, record) -> score, or (score, prediction); imported only once the
                user trusts it by name (`--trust-code mod:fn`, see `trimpi.trust`), never because data names it

Declared per record as `answer_type`: a name ("numeric", "pkg.mod:fn") or an object with the
name under "type" and options beside it ({"type": "numeric", "rel_tol": 0.01}).
"""

from __future__ import annotations

import importlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

from trimpi.data.answers.extract import after_think, extract_boxed, parse_tool_call, unboxed
from trimpi.data.gta.metrics import score_tool_call
from trimpi.data.gta.scorers import TextScorer, get_scorer
from trimpi.errors import ConfigError, DataError, TrimpiError
from trimpi.trust import check_spec, require_trusted

DEFAULT_TEXT_SCORER = "default"  # GTA free-text arguments: MiniLM BERTScore when installed, else lexical F1


@dataclass(frozen=True)
class Scored:
    """One completion's score in [0, 1], its parsed prediction, and details (GTA parts, judge reply)."""

    score: float
    pred: str | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.score >= 1.0


class Judge(Protocol):
    """Rates a free-form response: `judge(record, response, rubric)` -> (score in [0, 1] or None, reply).

    `name` (the model) and `prompt` (the template it fills) are recorded with every score.
    """

    name: str
    prompt: str

    def __call__(self, record: Any, response: str, rubric: str | None) -> tuple[float | None, str]: ...


class Scoring:
    """What scoring needs beyond the record: the GTA text scorer (by name or object) and an optional judge."""

    def __init__(self, text_scorer: str | TextScorer = DEFAULT_TEXT_SCORER, judge: Judge | None = None):
        self._text_scorer = text_scorer
        self.judge = judge

    @property
    def text_scorer(self) -> TextScorer:
        """The scorer object; a name is resolved on first use (BERTScore weights load only if needed)."""
        if isinstance(self._text_scorer, str):
            self._text_scorer = get_scorer(self._text_scorer)
        return self._text_scorer


class AnswerType:
    """Base: the prediction is the last \\boxed{} after the reasoning; subclasses define `match`."""

    name: ClassVar[str]

    def extract(self, text: str) -> str | None:
        return extract_boxed(after_think(text))

    def match(self, pred: str, gold: str) -> float:
        raise NotImplementedError

    def score(self, text: str, record: Any, scoring: Scoring) -> Scored:
        pred = self.extract(text)
        return Scored(0.0 if pred is None else self.match(pred, unboxed(record.answer)), pred)


@dataclass(frozen=True)
class ClevrAnswer(AnswerType):
    name: ClassVar[str] = "clevr"

    def match(self, pred: str, gold: str) -> float:
        return float(pred.strip() == gold.strip())


@dataclass(frozen=True)
class ExactAnswer(AnswerType):
    name: ClassVar[str] = "exact"
    ignore_case: bool = True
    collapse_whitespace: bool = True
    strip_period: bool = True

    def normalize(self, text: str) -> str:
        text = " ".join(text.split()) if self.collapse_whitespace else text.strip()
        text = text.lower() if self.ignore_case else text
        return text.rstrip(".").strip() if self.strip_period else text

    def match(self, pred: str, gold: str) -> float:
        return float(self.normalize(pred) == self.normalize(gold))


_LETTER = re.compile(r"\(?([A-Za-z])\)?(?:[.:)]\s*(.*))?", re.DOTALL)


@dataclass(frozen=True)
class ChoiceAnswer(AnswerType):
    name: ClassVar[str] = "choice"
    options: tuple[str, ...] = ()

    def index(self, text: str) -> int | None:
        """0-based option index of a letter or an option's text; None when it names no option."""
        norm = " ".join(text.split()).lower().rstrip(".")
        texts = [" ".join(o.split()).lower() for o in self.options]
        if norm in texts:
            return texts.index(norm)
        m = _LETTER.fullmatch(text.strip())
        if m is None:
            return None
        k = ord(m.group(1).upper()) - ord("A")
        if not self.options:
            return k
        tail = " ".join((m.group(2) or "").split()).lower().rstrip(".")  # "B) blue" must name option B's text
        return k if k < len(self.options) and tail in ("", texts[k]) else None

    def match(self, pred: str, gold: str) -> float:
        p, g = self.index(pred), self.index(gold)
        return float(p is not None and p == g)


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_number(text: str) -> float | None:
    """A plain number ("-3", "1,250.5", "2e-3", "7."), or None; never evaluates expressions."""
    t = text.strip().rstrip(".").strip()
    if not t or not _NUMBER.fullmatch(t) or not any(c.isdigit() for c in t):
        return None
    value = float(t.replace(",", ""))
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class NumericAnswer(AnswerType):
    name: ClassVar[str] = "numeric"
    abs_tol: float = 1e-6
    rel_tol: float = 0.0

    def match(self, pred: str, gold: str) -> float:
        p, g = parse_number(pred), parse_number(gold)
        return float(p is not None and g is not None and abs(p - g) <= max(self.abs_tol, self.rel_tol * abs(g)))


@dataclass(frozen=True)
class ToolCallAnswer(AnswerType):
    name: ClassVar[str] = "tool_call"

    def extract(self, text: str) -> str | None:
        call = parse_tool_call(text)
        return json.dumps(call, sort_keys=True, ensure_ascii=False) if call else None

    def score(self, text: str, record: Any, scoring: Scoring) -> Scored:
        try:
            parts = score_tool_call(text, record.answer, scoring.text_scorer)
        except ValueError:  # only the gold side can raise
            gold = record.answer[:80]
            raise DataError(f"record {record.id}: field 'answer' is not a JSON tool call: {gold!r}") from None
        return Scored(parts["overall"], self.extract(text), parts)


@dataclass(frozen=True)
class JudgeAnswer(AnswerType):
    name: ClassVar[str] = "judge"
    rubric: str | None = None

    def extract(self, text: str) -> str | None:
        return after_think(text).strip() or None

    def score(self, text: str, record: Any, scoring: Scoring) -> Scored:
        if scoring.judge is None:
            raise ConfigError(f"record {record.id}: answer type 'judge' needs a judge model, and none is configured")
        pred = self.extract(text)
        details = {"judge": scoring.judge.name, "judge_prompt": scoring.judge.prompt, "judge_reply": None}
        if pred is None:
            return Scored(0.0, None, details)
        value, reply = scoring.judge(record, pred, self.rubric)
        score = 0.0 if value is None else min(1.0, max(0.0, float(value)))
        return Scored(score, pred, {**details, "judge_reply": reply, "judge_unparsed": value is None})


@dataclass(frozen=True)
class CustomAnswer(AnswerType):
    """`module:function`, called as fn(completion, record) -> score or (score, prediction)."""

    name: ClassVar[str] = "custom"
    spec: str = ""

    def __post_init__(self) -> None:
        check_spec(self.spec, "answer type")  # naming code imports nothing: `load_function` does, if trusted

    def score(self, text: str, record: Any, scoring: Scoring) -> Scored:
        fn = load_function(self.spec)
        try:
            out = fn(text, record)
            value, pred = out if isinstance(out, tuple) else (out, None)
            value = float(value)
        except Exception as e:  # noqa: BLE001 - user code: report it as one line naming it
            why = f"{type(e).__name__}: {e}"
            raise TrimpiError(f"answer type '{self.spec}' failed on record {record.id}: {why}") from None
        score = min(1.0, max(0.0, value)) if not math.isnan(value) else 0.0
        return Scored(score, None if pred is None else str(pred))


def load_function(spec: str, what: str = "answer type") -> Any:
    """The callable named by "package.module:function", once the user trusted it (`trimpi.trust`); a
    one-line ConfigError naming `what` otherwise."""
    spec = check_spec(spec, what)
    require_trusted(spec, what)
    mod_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{what} {spec!r}: cannot import ({e})") from None
    if not callable(fn):
        raise ConfigError(f"{what} {spec!r}: {fn_name} is not callable")
    return fn


ANSWER_TYPES: dict[str, type[AnswerType]] = {
    t.name: t for t in (ClevrAnswer, ExactAnswer, ChoiceAnswer, NumericAnswer, ToolCallAnswer, JudgeAnswer)
}
TASK_DEFAULTS = {"clevr": "clevr", "gta": "tool_call"}  # any other task: "exact"


def _build(name: str, options: dict[str, Any]) -> AnswerType:
    if ":" in name:
        if options:
            raise ConfigError(f"answer type {name!r}: a 'module:function' type takes no options")
        return CustomAnswer(spec=name)
    if name not in ANSWER_TYPES:
        raise ConfigError(f"answer type {name!r}: expected one of {', '.join(ANSWER_TYPES)} or 'module:function'")
    cls = ANSWER_TYPES[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"answer type {name!r}: unknown option(s) {', '.join(unknown)}; "
                          f"expected {', '.join(sorted(known)) or 'none'}")
    for key, value in options.items():
        _check_option(name, key, value, getattr(cls, key))
    if "options" in options:
        options = {**options, "options": tuple(options["options"])}
    return cls(**options)


def _check_option(name: str, key: str, value: Any, default: Any) -> None:
    """The option's value has the type of its default (bool; number; list of strings; string)."""
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, float):
        ok, want = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0, "a number ≥ 0"
    elif isinstance(default, tuple):
        ok, want = isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of strings"
    else:
        ok, want = value is None or isinstance(value, str), "a string"
    if not ok:
        raise ConfigError(f"answer type {name!r}: option {key!r} must be {want}, got {value!r}")


def parse_answer_type(spec: str | dict[str, Any] | None, task: str = "") -> AnswerType:
    """The answer type a record declares; None gives the task's default (clevr, tool_call, else exact)."""
    if spec is None:
        return _build(TASK_DEFAULTS.get(task, "exact"), {})
    if isinstance(spec, str):
        return _build(spec.strip(), {})
    if isinstance(spec, dict) and isinstance(spec.get("type"), str):
        return _build(spec["type"].strip(), {k: v for k, v in spec.items() if k != "type"})
    raise ConfigError(f"answer type: expected a name or an object with a 'type' name, got {spec!r}")
