"""RL reward curves and PolicyRollout's premise, read from each RL step's metrics.jsonl.

PolicyRollout (PoRo-GRPO / PoRo-DAPO) samples every prompt twice: ordinary samples without the policy
and policy-aware samples with it in the prompt. Its premise is that the policy-aware half scores at least
as well as the ordinary half at the start of RL, so that it supplies the positive examples. The trainer
logs each half's mean reward per step (`reward/plain`, `reward/policy`); a run without PolicyRollout has no
policy-aware samples and only its ordinary curve is drawn.
"""

from __future__ import annotations

from typing import Any

CURVES = (("reward/plain", "ordinary"), ("reward/policy", "policy-aware"))
START_STEPS = 5  # "the start of RL": the mean over the first steps (all of them in a shorter run)


def policy_rollout_steps(run: dict[str, Any]) -> set[str]:
    """Ids of the RL steps that ran with PolicyRollout (their step config says so)."""
    return {s["id"] for s in run["steps"] if s["kind"] == "rl" and (s.get("config") or {}).get("policy_rollout")}


def reward_curves(run: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """For each RL step (named by the methods using it): (step, value) series per curve name, the
    policy-aware one only under PolicyRollout. A step logged more than once (a run replayed over the same
    directory) counts once: its last row."""
    labels: dict[str, list[str]] = {}
    for info in run["methods"].values():
        for sid in info["chain"]:
            labels.setdefault(sid, []).append(info["label"])
    poro = policy_rollout_steps(run)
    curves = {}
    for sid, logged in run["rl"].items():
        rows = sorted({r["step"]: r for r in logged if "step" in r}.values(), key=lambda r: r["step"])
        name = " / ".join(labels.get(sid, [sid]))
        curves[name] = {label: [(r["step"], r[key]) for r in rows if key in r and r.get("num_samples", 1)]
                        for key, label in CURVES if key == "reward/plain" or sid in poro}
    return curves


def _mean(points: list[tuple[int, float]]) -> float:
    return sum(v for _, v in points) / len(points)


def premise(series: dict[str, list[tuple[int, float]]], start: int = START_STEPS) -> dict[str, Any] | None:
    """One PolicyRollout run's halves: mean reward of each over its first `start` logged steps and over all,
    and whether the policy-aware half scored at least the ordinary half at the start; None when the run has no
    policy-aware curve or no step both halves were logged in."""
    aware = dict(series.get("policy-aware") or [])
    both = [(s, v) for s, v in series.get("ordinary") or [] if s in aware]
    if not both:
        return None
    first = both[:start]
    out = {"steps": len(both), "first": [first[0][0], first[-1][0]],
           "start_ordinary": _mean(first), "start_policy_aware": _mean([(s, aware[s]) for s, _ in first]),
           "all_ordinary": _mean(both), "all_policy_aware": _mean([(s, aware[s]) for s, _ in both])}
    out["holds"] = out["start_policy_aware"] >= out["start_ordinary"]
    return out


def premise_line(name: str, p: dict[str, Any]) -> str:
    """The report's sentence about one PolicyRollout run's halves."""
    lo, hi = p["first"]
    window = f"step {lo}" if lo == hi else f"steps {lo}–{hi}"
    verdict = ("**the policy-aware half scores at least the ordinary half at the start of RL**, as PolicyRollout "
               "assumes" if p["holds"] else "**the policy-aware half scores below the ordinary half at the start "
               "of RL**: PolicyRollout's premise does not hold for this model")
    return (f"- {name}: mean reward over {window}, policy-aware {p['start_policy_aware']:.3f} vs ordinary "
            f"{p['start_ordinary']:.3f} (all {p['steps']} steps: {p['all_policy_aware']:.3f} vs "
            f"{p['all_ordinary']:.3f}); {verdict}.")


def premise_markdown(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> list[str]:
    """A line per PolicyRollout run (none when no run used it)."""
    found = {name: premise(series) for name, series in curves.items()}
    return [premise_line(name, p) for name, p in found.items() if p is not None]
