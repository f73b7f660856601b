"""GTAPolicy evaluation: tool / argument / overall of crafted calls, the override policy, the judge interface."""

from __future__ import annotations

import json

import pytest

from test_eval_fixtures import ScriptedEngine, read_rows
from trimpi.data.schema import load_records
from trimpi.errors import ConfigError
from trimpi.eval import EvalOptions, LocalClient, Subject, evaluate_model
from trimpi.eval.judge import JUDGE_TEMPLATE
from trimpi.generation.judge import parse_score


@pytest.fixture(scope="module")
def gta(tmp_path_factory):
    from trimpi.data.gta.build import build_gta

    return build_gta(out=tmp_path_factory.mktemp("eval_gta") / "gta", gta_dir=None, profiles_per_step=1, seed=0,
                     overwrite=True)


@pytest.fixture(scope="module")
def processor():
    from trimpi.models.tiny import build_tiny

    return build_tiny("idefics3")[1]


def crafted(record, i: int) -> tuple[str, float, float]:
    """(reply, expected tool score, expected argument score) by kind i % 4."""
    gold = json.loads(record.answer)
    has_args = bool(gold.get("arguments"))
    kind = i % 4
    if kind == 0:
        return "<think>check the profile</think>" + json.dumps(gold), 1.0, 1.0
    if kind == 1:
        return json.dumps({"name": gold["name"], "arguments": {}}), 1.0, 0.0 if has_args else 1.0
    if kind == 2:
        return json.dumps({"name": gold["name"] + "x", "arguments": gold.get("arguments", {})}), 0.0, 1.0
    return "I cannot tell.", 0.0, 0.0


def by_query(records, texts):
    table = dict(zip([r.query for r in records], texts, strict=True))
    return lambda prompt: next((t for q, t in table.items() if q in prompt.text), "none")


def test_tool_argument_overall_and_override(gta, processor, tmp_path):
    test, override = load_records(gta / "test.jsonl"), load_records(gta / "override_test.jsonl")
    plan = {r.id: crafted(r, i) for i, r in enumerate(test)}
    plan_override = {r.id: crafted(r, i + 1) for i, r in enumerate(override)}
    replies = by_query(test, [plan[r.id][0] for r in test])
    replies_override = by_query(override, [plan_override[r.id][0] for r in override])
    engine = ScriptedEngine(lambda p: replies_override(p) if "RULE OVERRIDE" in p.text else replies(p))
    subject = Subject(processor=processor, engine=engine, name="scripted")
    opts = EvalOptions(protocols=["accuracy", "override", "efficiency"], scorer="lexical", batch_size=3,
                       progress=False)
    out = tmp_path / "out"
    res = evaluate_model(subject, gta, out, opts)["gta"]
    assert res["scorer"] == "lexical-f1"
    for name, records, table in (("accuracy", test, plan), ("override", override, plan_override)):
        summary = res["protocols"][name]
        n = len(records)
        tool = sum(table[r.id][1] for r in records) / n
        arg = sum(table[r.id][2] for r in records) / n
        assert summary["n"] == n and summary["scorer"] == "lexical-f1"
        assert summary["tool"] == pytest.approx(tool)
        assert summary["argument"] == pytest.approx(arg)
        assert summary["overall"] == pytest.approx((tool + arg) / 2)
        assert summary["score"] == pytest.approx((tool + arg) / 2)
        rows = read_rows(out / f"predictions_{name}.jsonl")
        for row in rows:
            assert row["tool"] == table[row["id"]][1] and row["argument"] == pytest.approx(table[row["id"]][2])
    with_override = [t for t, _ in engine.seen if "RULE OVERRIDE" in t]
    assert len(with_override) == len(override)
    eff = res["protocols"]["efficiency"]
    assert eff["prefill_n"] == 0 and eff["prefill_savings_pct"] is None
    assert eff["tokens_with_policy"] > eff["tokens_without_policy"] > 0


class FakeJudge:
    """A judge whose k-th reply ends with a fixed rating (or none)."""

    name = "fake-judge"

    def __init__(self, replies):
        self.replies, self.asked = replies, []

    def complete(self, conversations, max_tokens=512, temperature=0.0):
        self.asked.extend(conversations)
        return self.replies[: len(conversations)]


def test_referral_with_a_judge(gta, processor, tmp_path):
    test = load_records(gta / "test.jsonl")
    subject = Subject(processor=processor, engine=ScriptedEngine(lambda p: "OCR_v1"), name="scripted")
    with pytest.raises(ConfigError, match="--judge"):
        evaluate_model(subject, gta, tmp_path / "x", EvalOptions(protocols=["referral"], progress=False))
    judge = FakeJudge(["Cites the OCR rule.\nScore: 8", "Wrong version. Score: 3/10", "no rating here", "Score: 10"])
    opts = EvalOptions(protocols=["referral"], judge_samples=4, progress=False)
    res = evaluate_model(subject, gta, tmp_path / "out", opts, judge=judge)["gta"]["protocols"]["referral"]
    n = min(4, len(test))
    assert res["method"] == "judge" and res["judge"] == "fake-judge" and res["n"] == n
    assert res["judge_prompt"] == JUDGE_TEMPLATE
    ratings = [8.0, 3.0, None, 10.0][:n]
    valid = [r for r in ratings if r is not None]
    assert res["unparsed"] == ratings.count(None)
    assert res["mean"] == pytest.approx(sum(valid) / len(valid))
    assert res["score"] == pytest.approx(sum(valid) / len(valid) / 10)
    prompt = judge.asked[0][0]["content"][0]["text"]
    assert "GTAPolicy" in prompt and test[0].query in prompt and "OCR_v1" in prompt
    rows = read_rows(tmp_path / "out" / "predictions_referral.jsonl")
    assert [r["judge_score"] for r in rows] == ratings


def test_all_skips_what_does_not_apply(gta, processor, tmp_path):
    from trimpi.eval.protocols import PROTOCOLS, asks_for_all, parse_protocols

    assert asks_for_all("accuracy, all") and parse_protocols("all") == list(PROTOCOLS)
    subject = Subject(processor=processor, engine=ScriptedEngine(lambda p: "none"), name="scripted")
    opts = EvalOptions(protocols=parse_protocols("all"), skip_inapplicable=True, limit=2, progress=False)
    res = evaluate_model(subject, gta, tmp_path / "out", opts)["gta"]["protocols"]
    assert list(res) == list(PROTOCOLS)
    assert "general_test.jsonl: file not found" in res["forgetting"]["skipped"]
    assert "--judge" in res["referral"]["skipped"]
    assert res["override"]["n"] == 2 and "skipped" not in res["efficiency"]
    assert not (tmp_path / "out" / "predictions_forgetting.jsonl").exists()


def test_referral_judged_by_a_local_model(gta, processor, tmp_path):
    from trimpi.models.tiny import build_tiny

    judge = LocalClient(*build_tiny("idefics3", seed=1), name="tiny-judge")
    subject = Subject(processor=processor, engine=ScriptedEngine(lambda p: "Score: 12"), name="scripted")
    opts = EvalOptions(protocols=["referral"], judge_samples=2, judge_max_tokens=4, progress=False)
    res = evaluate_model(subject, gta, tmp_path / "out", opts, judge=judge)["gta"]["protocols"]["referral"]
    rows = read_rows(tmp_path / "out" / "predictions_referral.jsonl")
    assert res["n"] == 2 and res["judge"] == "tiny-judge" and len(rows) == 2
    ratings = [parse_score(r["judge_reply"]) for r in rows]  # a random model rarely writes a valid rating
    assert [r["judge_score"] for r in rows] == ratings
    assert res["unparsed"] == ratings.count(None)
