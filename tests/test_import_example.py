"""The worked example (examples/returns_desk): its rules, its generator and its import."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from trimpi.data.answers import score_answer
from trimpi.data.imports import ImportOptions, import_dataset
from trimpi.data.schema import PolicyStore, load_records
from trimpi.eval.judge import judge_messages
from trimpi.train.examples import build_examples

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "returns_desk"
CHOICE = {"type": "choice", "options": ["full_refund", "store_credit", "replacement", "reject", "escalate"]}


def load_generator():
    spec = importlib.util.spec_from_file_location("returns_desk_generate", EXAMPLE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def obj(shape: str, color: str = "gray", material: str = "rubber") -> dict:
    return {"shape": shape, "color": color, "material": material, "size": "large"}


def profile(days: int, tier: str = "Standard", returns: int = 0) -> dict:
    return {"days": days, "tier": tier, "returns": returns}


@pytest.mark.parametrize("objects, prof, version, decision", [
    ([obj("cylinder", "red"), obj("sphere", material="metal")], profile(99), 1, "full_refund"),  # R1 beats all
    ([obj("cube")], profile(61), 1, "reject"),                                                  # R2
    ([obj("cube")], profile(61, "Plus"), 1, "store_credit"),
    ([obj("cube")], profile(91, "Plus"), 1, "reject"),
    ([obj("cube")], profile(50), 2, "reject"),                                                  # v2: 45-day window
    ([obj("sphere", material="metal")], profile(10, returns=2), 1, "replacement"),              # R3
    ([obj("sphere", material="metal")], profile(10, returns=2), 2, "escalate"),                 # v2: 2 returns
    ([obj("sphere"), obj("cylinder", "blue")], profile(30), 1, "full_refund"),                  # R4
    ([obj("sphere"), obj("cylinder", "blue")], profile(31), 1, "store_credit"),
])
def test_rules_follow_the_policy_text(objects, prof, version, decision):
    got, reasoning = gen.decide(objects, prof, version)
    assert got == decision and reasoning.endswith(f"Decision: {decision}.")


def test_policy_documents_differ_only_in_the_v2_thresholds():
    v1, v2 = (EXAMPLE / "policy.md").read_text(), (EXAMPLE / "policy_v2.md").read_text()
    assert "more than 60 days ago" in v1 and "more than 45 days ago" in v2
    assert "3 or more returns" in v1 and "2 or more returns" in v2
    assert gen.VERSIONS[1]["window"] == 60 and gen.VERSIONS[2]["window"] == 45


def test_generate_and_import(tmp_path):
    counts = gen.generate(tmp_path / "src", seed=1, train_photos=4, test_photos=3, general=2)
    assert counts == {"train": 8, "test": 3, "override_test": 3, "general_test": 2}
    same = gen.generate(tmp_path / "again", seed=1, train_photos=4, test_photos=3, general=2)
    assert same == counts
    assert (tmp_path / "src/conversations.jsonl").read_bytes() == (tmp_path / "again/conversations.jsonl").read_bytes()
    out = tmp_path / "data"
    manifest = import_dataset(ImportOptions(
        examples=[tmp_path / "src/conversations.jsonl"], policies=[str(EXAMPLE / "policy.md")],
        override_policies=[str(EXAMPLE / "policy_v2.md")], answer_type=json.dumps(CHOICE)), out)
    assert manifest["policies"] == ["blockworks-returns"]
    assert manifest["counts"] == {"train": 8, "train_cot": 8, "test": 3, "override_test": 3, "general_test": 2}
    test = load_records(out / "test.jsonl")
    store = PolicyStore(out)
    assert len(store.get(test[0]).images) == 2
    override = load_records(out / "override_test.jsonl")
    assert [r.policy_path for r in override] == ["override_policies/blockworks-returns.json"] * 3
    assert "45 days" in store.get(override[0]).text
    for r in test + override:
        assert score_answer(r.response, r).score == 1.0
        assert r.scene and (out / r.scene).is_file()
    general = load_records(out / "general_test.jsonl")
    assert all(r.policy is None and r.answer_type == "exact" for r in general)
    assert build_examples(out, "cpt", "cot") and build_examples(out, "sft", "cot")
    judge_text = judge_messages(store.get(test[0]), test[0], "\\boxed{reject}")[0]["content"][0]["text"]
    assert "<image>" not in judge_text and judge_text.count("[image]") == 2  # a text-only judge gets no marker


class DecisionTeacher:
    """A ChatClient that answers each record's gold decision when `right(record)`, else another option."""

    name = "scripted"

    def __init__(self, records, right):
        self.records, self.right = records, right

    def complete(self, conversations, max_tokens=512, temperature=0.0):
        out = []
        for conv in conversations:
            text = "".join(b.get("text", "") for b in conv[-1]["content"] if b["type"] == "text")
            (rec,) = [r for r in self.records if r.query in text]
            answer = rec.answer if self.right(rec) else next(o for o in CHOICE["options"] if o != rec.answer)
            out.append(f"<think>Checking the rules in order for this photo.</think>\n\\boxed{{{answer}}}")
        return out


def test_forward_teacher_traces_are_filtered_by_the_answer_type(tmp_path):
    from trimpi.data.teacher import TeacherOptions, generate_traces

    gen.generate(tmp_path / "src", seed=2, train_photos=3, test_photos=1, general=0)
    out = tmp_path / "data"
    import_dataset(ImportOptions(examples=[tmp_path / "src/conversations.jsonl"], policies=[str(EXAMPLE / "policy.md")],
                                 override_policies=[str(EXAMPLE / "policy_v2.md")], answer_type=CHOICE), out)
    records = load_records(out / "train.jsonl")
    keep = {r.id for r in records[::2]}
    summary = generate_traces(DecisionTeacher(records, lambda r: r.id in keep), out, tmp_path / "traces.jsonl",
                              TeacherOptions(mode="forward", samples_per_example=1, progress=False))
    kept = load_records(tmp_path / "traces.jsonl")
    assert {r.id for r in kept} == keep and summary["kept"] == len(keep)
    assert all(r.reasoning == "Checking the rules in order for this photo." for r in kept)


def test_the_example_recipe_plans_every_protocol_with_its_judge(tmp_path):
    """The shipped recipe on an imported returns-desk set: in-context, CoT SFT and TriMPI, each evaluated with
    every protocol the dataset supports (override: its v2 policy; referral: the recipe's judge)."""
    from trimpi.eval.protocols import inapplicable
    from trimpi.pipeline import load_recipe, run_recipe

    gen.generate(tmp_path / "src", seed=3, train_photos=3, test_photos=2, general=2)
    data = tmp_path / "data"
    import_dataset(ImportOptions(examples=[tmp_path / "src/conversations.jsonl"], policies=[str(EXAMPLE / "policy.md")],
                                 override_policies=[str(EXAMPLE / "policy_v2.md")], answer_type=CHOICE), data)
    recipe = load_recipe(EXAMPLE / "recipe.yaml", {"data": {"path": str(data)}})
    record = run_recipe(recipe, tmp_path / "run", dry_run=True, echo=lambda _: None)
    assert set(record["methods"]) == {"in_context", "cot_sft", "trimpi_grpo"}
    evals = [s for s in record["steps"] if s["kind"] == "eval"]
    protocols = {p for s in evals for p in s["config"]["protocols"]}
    assert protocols >= {"accuracy", "in_context", "override", "policy_in_context", "referral", "forgetting",
                         "efficiency"}
    assert all(inapplicable(data, p, judge=True) is None for p in protocols)
    assert all(s["config"]["judge"] == {"url": None, "model": "smol"} for s in evals)
