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

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trimpi.data.answers import Scoring, format_ok, load_function, score_answer
from trimpi.data.schema import Record
from trimpi.errors import ConfigError, DataError

RewardFn = Callable[[list[str], list[Record]], list[float]]


def accuracy_reward_with(scoring: Scoring) -> RewardFn:
    """The accuracy reward under `scoring` (GTA text scorer, judge): the evaluation's per-example score."""

    def accuracy(completions: list[str], records: list[Record]) -> list[float]:
        return [score_answer(text, rec, scoring).score for text, rec in zip(completions, records)]

    return accuracy


def accuracy_reward(completions: list[str], records: list[Record]) -> list[float]:
    """Task accuracy in [0, 1]: exactly `trimpi.data.answers.score_answer(...).score`, the evaluation's
    score (ClevrPolicy exact match, normalized match for general questions, GTA overall, ...), with
    the default GTA text scorer."""
    return accuracy_reward_with(_default_scoring())(completions, records)


@functools.lru_cache(maxsize=1)
def _default_scoring() -> Scoring:
    return Scoring()


def format_reward(completions: list[str], records: list[Record]) -> list[float]:
    """1.0 when the output has the expected shape: a non-empty <think>…</think>, then an answer of the
    record's type after it (\\boxed{…}, or a parseable JSON tool call for GTAPolicy)."""
    return [float(format_ok(text, rec)) for text, rec in zip(completions, records)]


BUILTIN_REWARDS: dict[str, RewardFn] = {"accuracy": accuracy_reward, "format": format_reward}


def builtin_rewards(scoring: Scoring) -> dict[str, RewardFn]:
    """The built-in rewards with accuracy scored under `scoring` (text scorer, judge)."""
    return {**BUILTIN_REWARDS, "accuracy": accuracy_reward_with(scoring)}


def load_reward(spec: str, scoring: Scoring | None = None) -> RewardFn:
    """A built-in name ("accuracy", "format") or an importable "package.module:function"."""
    if spec == "accuracy" and scoring is not None:
        return accuracy_reward_with(scoring)
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]
    if ":" not in spec:
        raise ConfigError(f"reward '{spec}': expected one of {sorted(BUILTIN_REWARDS)} or 'module:function'")
    return load_function(spec, "reward")


def _safe_call(fn: RewardFn, completions: list[str], records: list[Record]) -> list[float]:
    """Call fn on the batch; if it raises, score item by item and give 0 to the failures.

    A ConfigError or DataError (a record whose answer type needs a missing judge, a gold answer
    that cannot be read) is a setup fault, not a bad completion: it stops the run instead of
    silently scoring 0."""
    try:
        values = [float(v) for v in fn(completions, records)]
        if len(values) == len(completions):
            return [0.0 if math.isnan(v) else v for v in values]
    except (ConfigError, DataError):
        raise
    except Exception:  # noqa: BLE001 - a reward must never crash a step
        pass
    out = []
    for c, r in zip(completions, records):
        try:
            v = float(fn([c], [r])[0])
            out.append(0.0 if math.isnan(v) else v)
        except (ConfigError, DataError):
            raise
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
    def parse(cls, specs: Sequence[str], weights: str | None, scoring: Scoring | None = None) -> RewardSpec:
        """From CLI strings: specs like ["accuracy", "format", "mypkg.r:fn"], weights like
        "accuracy=0.9,format=0.1" (default: 0.9/0.1 for the built-ins, 1.0 for others); `scoring`
        sets accuracy's GTA text scorer and judge (default: the evaluation's default)."""
        funcs = {s.split(":")[-1] if ":" in s else s: load_reward(s, scoring) for s in specs}
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
