"""PolicyRollout's premise in the report: for each PoRo run, the policy-aware vs ordinary samples' mean reward
at the start of RL, read from a toy RL run's own metrics.jsonl; a run without PolicyRollout draws one curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from test_eval_fixtures import ScriptedEngine
from test_rl_fixtures import COLORS, POLICY_TEXT, make_dataset, tiny_model
from trimpi.data.schema import load_records
from trimpi.report import load_run, premise, reward_curves, write_report
from trimpi.report.rewards import premise_markdown
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.trainer import train_rl

STEPS = 6  # more than the start window (5 steps)


def right_case(prompt) -> str:
    """The record's case, read from its image (red: Case 1)."""
    return "Case 1" if prompt.images[-1].convert("RGB").getpixel((0, 0)) == COLORS["red"] else "Case 2"


def scripted(aware_right: bool) -> ScriptedEngine:
    """Policy-aware samples answer right (aware_right) or always 'Case 1'; ordinary samples the other way round."""
    def reply(prompt) -> str:
        right = (POLICY_TEXT in prompt.text) == aware_right
        return f"<think>Condition 1</think> \\boxed{{{right_case(prompt) if right else 'Case 1'}}}"

    return ScriptedEngine(reply)


def write_run(out: Path, data: Path, aware_right: bool) -> Path:
    """A run with a PoRo-GRPO step and a GRPO step, each trained for real on a toy dataset (scripted rollouts)."""
    steps = {"rl-poro": True, "rl-grpo": False}
    run = {"recipe": {"name": "premise", "model": "tiny:idefics3", "seed": 0, "methods": ["trimpi", "no_poro"]},
           "methods": {"trimpi": {"label": "TriMPI", "model": "rl-poro", "eval": "eval-x", "chain": ["rl-poro"]},
                       "no_poro": {"label": "TriMPI w/o PoRo", "model": "rl-grpo", "eval": "eval-y",
                                   "chain": ["rl-grpo"]}},
           "steps": [{"id": sid, "kind": "rl", "config": {"algo": "grpo", "policy_rollout": poro}, "inputs": [],
                      "methods": ["m"], "status": "done"} for sid, poro in steps.items()]}
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps(run))
    records = load_records(data / "train.jsonl")
    for sid, poro in steps.items():
        model, processor = tiny_model()
        cfg = RLConfig(algo="grpo", policy_rollout=poro, num_generations=2, prompts_per_step=2, max_steps=STEPS,
                       learning_rate=1e-3, max_completion_length=8, per_device_train_batch_size=8)
        train_rl(cfg, model, processor, records, data, out / "steps" / sid, engine=scripted(aware_right))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("premise_data"), n=8)


def logged(out: Path, sid: str) -> list[dict]:
    return [json.loads(line) for line in (out / "steps" / sid / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("aware_right", [True, False])
def test_report_compares_the_halves_of_each_policy_rollout_run(data, tmp_path, aware_right):
    out = write_run(tmp_path / "run", data, aware_right)
    rows = logged(out, "rl-poro")[:5]
    aware = sum(r["reward/policy"] for r in rows) / 5
    plain = sum(r["reward/plain"] for r in rows) / 5
    assert (aware > plain) == aware_right  # the scripted halves really differ, the way the test says
    md = write_report(out)["md"].read_text()
    section = md.split("## RL reward: ordinary vs policy-aware samples")[1].split("\n## ")[0]
    (line,) = [ln for ln in section.splitlines() if ln.startswith("- ")]  # the GRPO run has no line
    assert line.startswith(f"- TriMPI: mean reward over steps 1–5, policy-aware {aware:.3f} vs ordinary {plain:.3f} "
                           f"(all {STEPS} steps: ")
    assert ("at least the ordinary half at the start of RL" in line) == aware_right
    assert ("below the ordinary half at the start of RL" in line) != aware_right
    curves = reward_curves(load_run(out))
    assert set(curves["TriMPI"]) == {"ordinary", "policy-aware"} and set(curves["TriMPI w/o PoRo"]) == {"ordinary"}
    assert len(curves["TriMPI w/o PoRo"]["ordinary"]) == STEPS
    assert (out / "rewards.png").read_bytes()[:4] == b"\x89PNG" and "(rewards.png)" in section


def test_premise_window_and_runs_without_policy_aware_samples():
    series = {"ordinary": [(1, 0.5), (2, 0.5), (3, 0.0)], "policy-aware": [(1, 0.5), (2, 0.5), (3, 1.0)]}
    p = premise(series, start=2)
    assert p["first"] == [1, 2] and p["start_policy_aware"] == p["start_ordinary"] == 0.5 and p["holds"]  # ties hold
    assert p["all_policy_aware"] == pytest.approx(2 / 3) and p["all_ordinary"] == pytest.approx(1 / 3)
    assert not premise({"ordinary": [(1, 0.6)], "policy-aware": [(1, 0.4)]})["holds"]
    assert premise({"ordinary": [(1, 0.5)]}) is None and premise({"ordinary": [], "policy-aware": []}) is None
    (line,) = premise_markdown({"a": {"ordinary": [(1, 0.25)], "policy-aware": [(1, 0.75)]}, "b": {"ordinary": [(1, 1)]}})
    assert line.startswith("- a: mean reward over step 1, policy-aware 0.750 vs ordinary 0.250 (all 1 steps")


def test_a_run_without_policy_rollout_says_so(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    run = {"recipe": {"name": "grpo", "model": "m", "seed": 0, "methods": ["g"]},
           "methods": {"g": {"label": "GRPO", "model": "rl-g", "eval": "e", "chain": ["rl-g"]}},
           "steps": [{"id": "rl-g", "kind": "rl", "config": {"policy_rollout": False}, "inputs": [], "methods": ["g"],
                      "status": "done"}]}
    (out / "run.json").write_text(json.dumps(run))
    (out / "steps" / "rl-g").mkdir(parents=True)
    rows = [{"step": k, "reward/plain": 0.5, "reward/policy": 0.0, "num_samples": 4} for k in (1, 2)]
    (out / "steps" / "rl-g" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(out)["md"].read_text()
    assert "No RL step used PolicyRollout" in md and "policy-aware 0" not in md
    assert Image.open(out / "rewards.png").size[0] > 0
