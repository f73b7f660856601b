"""Reward functions for RL.

Every reward function has one signature::

    def my_reward(completions: list[str], records: list[Record]) -> list[float]

`completions[i]` is the decoded text the model wrote for `records[i]` (special tokens removed);
the function returns one float per completion. Rewards are combined as a weighted sum
(`RewardSpec`); the default is 0.9 · accuracy + 0.1 · format. A reward function that raises
scores the offending completions 0 instead of crashing the step, and unparseable or empty
completions score 0 by construction. Model output is only parsed (regex / json), never executed.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trimpi.data.schema import THINK_CLOSE, THINK_OPEN, Record
from trimpi.errors import ConfigError

RewardFn = Callable[[list[str], list[Record]], list[float]]

_BOXED = "\\boxed{"
_THINK_THEN_BOXED = re.compile(
    re.escape(THINK_OPEN) + r".+?" + re.escape(THINK_CLOSE) + r".*\\boxed\{.+\}", re.DOTALL
)
_THINK_BLOCK = re.compile(re.escape(THINK_OPEN) + r".+?" + re.escape(THINK_CLOSE), re.DOTALL)


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in text (nested braces allowed), or None."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def after_think(text: str) -> str:
    """The part of text after the last </think> (all of it when there is none)."""
    k = text.rfind(THINK_CLOSE)
    return text if k < 0 else text[k + len(THINK_CLOSE) :]


def extract_json_call(text: str) -> dict | None:
    """The first JSON object with a "name" key after the reasoning, or None."""
    body = after_think(text)
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", body):
        try:
            obj, _ = decoder.raw_decode(body, m.start())
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            return obj
    return None


def _gold_answer(record: Record) -> str:
    boxed = extract_boxed(record.answer)
    return boxed if boxed is not None else record.answer


def boxed_match(completion: str, record: Record) -> float:
    """1.0 when the last \\boxed{...} of the completion equals the record's answer."""
    pred = extract_boxed(after_think(completion))
    return float(pred is not None and _norm(pred) == _norm(_gold_answer(record)))


def tool_call_score(completion: str, record: Record) -> float:
    """GTAPolicy overall score (tool + argument) / 2 of the completion's JSON call."""
    call = extract_json_call(completion)
    if call is None:
        return 0.0
    from trimpi.data.gta.metrics import score_tool_call

    return float(score_tool_call(json.dumps(call), record.answer)["overall"])


def accuracy_reward(completions: list[str], records: list[Record]) -> list[float]:
    """Task accuracy in [0, 1]: tool-call overall score for task "gta", boxed exact match otherwise."""
    out = []
    for text, rec in zip(completions, records):
        out.append(tool_call_score(text, rec) if rec.task == "gta" else boxed_match(text, rec))
    return out


def format_reward(completions: list[str], records: list[Record]) -> list[float]:
    """1.0 when the output has the expected shape: <think>…</think> then \\boxed{…}
    (ClevrPolicy and other boxed tasks) or then a parseable JSON tool call (task "gta")."""
    out = []
    for text, rec in zip(completions, records):
        if rec.task == "gta":
            ok = _THINK_BLOCK.search(text) is not None and extract_json_call(text) is not None
        else:
            ok = _THINK_THEN_BOXED.search(text) is not None and extract_boxed(after_think(text)) is not None
        out.append(float(ok))
    return out


BUILTIN_REWARDS: dict[str, RewardFn] = {"accuracy": accuracy_reward, "format": format_reward}


def load_reward(spec: str) -> RewardFn:
    """A built-in name ("accuracy", "format") or an importable "package.module:function"."""
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]
    if ":" not in spec:
        raise ConfigError(f"reward '{spec}': expected one of {sorted(BUILTIN_REWARDS)} or 'module:function'")
    mod_name, fn_name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"reward '{spec}': cannot import ({e})") from None
    if not callable(fn):
        raise ConfigError(f"reward '{spec}': not callable")
    return fn


def _safe_call(fn: RewardFn, completions: list[str], records: list[Record]) -> list[float]:
    """Call fn on the batch; if it raises, score item by item and give 0 to the failures."""
    try:
        values = [float(v) for v in fn(completions, records)]
        if len(values) == len(completions):
            return [v if v == v else 0.0 for v in values]  # NaN -> 0
    except Exception:  # noqa: BLE001 - a reward must never crash a step
        pass
    out = []
    for c, r in zip(completions, records):
        try:
            v = float(fn([c], [r])[0])
            out.append(v if v == v else 0.0)
        except Exception:  # noqa: BLE001
            out.append(0.0)
    return out


@dataclass
class RewardSpec:
    """Named reward functions and their weights; the reward is Σ weight · value."""

    funcs: dict[str, RewardFn] = field(default_factory=lambda: dict(BUILTIN_REWARDS))
    weights: dict[str, float] = field(default_factory=lambda: {"accuracy": 0.9, "format": 0.1})

    def __post_init__(self) -> None:
        missing = set(self.funcs) - set(self.weights)
        if missing:
            raise ConfigError(f"reward weights: no weight for {sorted(missing)}")

    @classmethod
    def parse(cls, specs: Sequence[str], weights: str | None) -> RewardSpec:
        """From CLI strings: specs like ["accuracy", "format", "mypkg.r:fn"], weights like
        "accuracy=0.9,format=0.1" (default: 0.9/0.1 for the built-ins, 1.0 for others)."""
        funcs = {s.split(":")[-1] if ":" in s else s: load_reward(s) for s in specs}
        w = {"accuracy": 0.9, "format": 0.1}
        w = {k: w.get(k, 1.0) for k in funcs}
        if weights:
            for part in weights.split(","):
                if "=" not in part:
                    raise ConfigError(f"--reward-weights: expected name=value pairs, got {part!r}")
                k, v = part.split("=", 1)
                if k.strip() not in funcs:
                    raise ConfigError(f"--reward-weights: unknown reward {k.strip()!r}; have {sorted(funcs)}")
                try:
                    w[k.strip()] = float(v)
                except ValueError:
                    raise ConfigError(f"--reward-weights: {k.strip()}={v!r} is not a number") from None
        return cls(funcs=funcs, weights=w)

    def score(self, completions: list[str], records: list[Record]) -> tuple[list[float], dict[str, list[float]]]:
        """Returns (total reward per completion, {name: values})."""
        parts = {name: _safe_call(fn, completions, records) for name, fn in self.funcs.items()}
        total = [0.0] * len(completions)
        for name, values in parts.items():
            total = [t + self.weights[name] * v for t, v in zip(total, values)]
        return total, parts
