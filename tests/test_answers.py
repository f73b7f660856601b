"""Answer types: one scorer per type, and the RL reward scores exactly what the evaluation scores."""

from __future__ import annotations

import json

import pytest

from trimpi.data.answers import (
    DEFAULT_TEXT_SCORER,
    Scoring,
    answer_type_of,
    format_ok,
    parse_answer_type,
    score_answer,
)
from trimpi.data.gta.scorers import lexical_scorer
from trimpi.data.schema import PolicyStore, Record
from trimpi.errors import ConfigError, DataError, TrimpiError
from trimpi.eval.scoring import score_example
from trimpi.generation.judge import AnswerJudge
from trimpi.train.rl.rewards import RewardSpec, accuracy_reward, format_reward

LEX = lexical_scorer()


def rec(task="general", answer="yes", answer_type=None, rid="r"):
    return Record(id=rid, task=task, query="q", answer=answer, response=f"\\boxed{{{answer}}}",
                  answer_type=answer_type)


def both(completions: list[str], records: list[Record]) -> tuple[list[float], list[dict]]:
    """The RL accuracy reward and the evaluation rows for the same completions, same text scorer."""
    _, parts = RewardSpec.parse(["accuracy", "format"], None, Scoring(LEX)).score(completions, records)
    rows = [score_example(r, c, LEX) for c, r in zip(completions, records)]
    assert parts["format"] == [row["format"] for row in rows]
    return parts["accuracy"], rows


def assert_agree(completions, records, expected):
    reward, rows = both(completions, records)
    assert reward == [row["score"] for row in rows] == expected
    assert [row["correct"] for row in rows] == [v == 1.0 for v in expected]


def test_clevr_reward_equals_evaluation_and_case_matters():
    # ClevrPolicy answers are leaf labels: exact match (after strip) in training and in evaluation,
    # so "\boxed{case 3}" is wrong for gold "Case 3" in both (it used to earn reward 1 and score 0).
    r = rec("clevr", "Case 3")
    texts = ["<think>1.1 yes</think>\\boxed{Case 3}", "<think>x</think>\\boxed{case 3}", "\\boxed{ Case 3 }",
             "<think>\\boxed{Case 3}</think> so Case 1", "<think>x</think>\\boxed{Case 4}", "", "\\boxed{"]
    assert_agree(texts, [r] * len(texts), [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert accuracy_reward(texts, [r] * len(texts)) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_general_questions_normalized_in_both():
    r = rec("general", "yes")
    texts = ["<think>look</think>\\boxed{ Yes. }", "\\boxed{YES}", "\\boxed{no}", "yes", "\\boxed{yes yes}"]
    assert_agree(texts, [r] * len(texts), [1.0, 1.0, 0.0, 0.0, 0.0])


def test_gta_last_call_after_reasoning_in_both():
    gold = {"name": "GoogleSearch_v2", "arguments": {"query": "tallest building in Paris", "k": 1}}
    r = rec("gta", json.dumps(gold))
    first_wrong = json.dumps({"name": "GoogleSearch_v1", "arguments": {"query": "paris", "k": 4}})
    two_calls = "<think>age 30, credits 200</think>" + first_wrong + "\nCorrection: " + json.dumps(gold)
    reversed_calls = "<think>x</think>" + json.dumps(gold) + " no, " + first_wrong
    quoted_in_reasoning = "<think>" + json.dumps(gold) + "</think>nothing"
    partial = json.dumps({"name": "GoogleSearch_v2", "arguments": {"query": "tallest Paris building", "k": 1}})
    texts = [two_calls, reversed_calls, quoted_in_reasoning, partial]
    reward, rows = both(texts, [r] * len(texts))
    assert reward == [row["score"] for row in rows]
    assert reward[0] == 1.0 and rows[0]["pred"] == json.dumps(gold, sort_keys=True)
    query_f1 = LEX("paris", gold["arguments"]["query"])
    assert reward[1] == rows[1]["overall"] == pytest.approx((0.0 + (query_f1 + 0.0) / 2) / 2)  # last call: v1, k=4
    assert reward[2] == 0.0 and rows[2]["pred"] is None
    assert 0.5 < reward[3] < 1.0 and {"tool", "argument", "overall"} <= set(rows[3])
    assert [row["format"] for row in rows] == [1.0, 1.0, 0.0, 0.0]


def test_rl_and_eval_share_one_default_text_scorer():
    import inspect

    from trimpi.cli.cot import cot
    from trimpi.cli.rl import rl
    from trimpi.data.teacher import TeacherOptions
    from trimpi.eval.runner import EvalOptions
    from trimpi.train.rl.config import RLConfig
    from trimpi.train.rl.rewards import _default_scoring

    assert EvalOptions().scorer == RLConfig().scorer == TeacherOptions().scorer == DEFAULT_TEXT_SCORER
    assert inspect.signature(rl).parameters["scorer"].default == DEFAULT_TEXT_SCORER
    assert inspect.signature(cot).parameters["scorer"].default == DEFAULT_TEXT_SCORER  # the teacher filter too
    with pytest.raises(ConfigError, match=r"^--scorer: expected one of default, bertscore, lexical, got 'bleu'$"):
        TeacherOptions(scorer="bleu").check()
    assert Scoring()._text_scorer == DEFAULT_TEXT_SCORER and _default_scoring()._text_scorer == DEFAULT_TEXT_SCORER


def test_task_defaults_and_record_field():
    assert answer_type_of(rec("clevr")).name == "clevr"
    assert answer_type_of(rec("gta", "{}")).name == "tool_call"
    assert answer_type_of(rec("general")).name == "exact"
    assert "answer_type" not in rec().to_dict()  # default-typed records keep their old JSONL shape
    row = rec(answer="7", answer_type={"type": "numeric", "abs_tol": 0.5}).to_dict()
    assert Record.from_dict(row).answer_type == {"type": "numeric", "abs_tol": 0.5}
    with pytest.raises(DataError, match=r"^data.jsonl:3: field 'answer_type': answer type 'numbers'"):
        Record.from_dict({**row, "answer_type": "numbers"}, where="data.jsonl:3")


def test_exact_options():
    strict = rec(answer="Paris", answer_type={"type": "exact", "ignore_case": False, "strip_period": False})
    assert score_answer("\\boxed{ Paris }", strict).score == 1.0
    assert score_answer("\\boxed{paris}", strict).score == 0.0
    assert score_answer("\\boxed{Paris.}", strict).score == 0.0
    loose = rec(answer="Paris", answer_type="exact")
    assert score_answer("\\boxed{paris.}", loose).score == 1.0
    spaced = rec(answer="New York", answer_type={"type": "exact", "collapse_whitespace": False})
    assert score_answer("\\boxed{New  York}", spaced).score == 0.0


def test_choice_letters_and_options():
    r = rec(answer="B", answer_type={"type": "choice", "options": ["red", "blue", "green"]})
    scores = [score_answer(f"\\boxed{{{t}}}", r).score for t in ["B", "(b)", "B.", "B) blue", "Blue", "blue.",
                                                                 "A", "red", "B) red", "D", "blue or red"]]
    assert scores == [1.0] * 6 + [0.0] * 5
    by_text = rec(answer="green", answer_type={"type": "choice", "options": ["red", "blue", "green"]})
    assert score_answer("\\boxed{C}", by_text).correct
    letters_only = rec(answer="(C)", answer_type="choice")
    assert [score_answer(f"\\boxed{{{t}}}", letters_only).score for t in ["C", "c", "C: the cube", "D"]] == [
        1.0, 1.0, 1.0, 0.0]


def test_numeric_tolerance_edges():
    absolute = rec(answer="10", answer_type={"type": "numeric", "abs_tol": 0.5})
    assert [score_answer(f"\\boxed{{{t}}}", absolute).score for t in ["10.5", "9.5", "10.5001", "10.", "ten"]] == [
        1.0, 1.0, 0.0, 1.0, 0.0]
    relative = rec(answer="1,000", answer_type={"type": "numeric", "rel_tol": 0.01})
    assert [score_answer(f"\\boxed{{{t}}}", relative).score for t in ["1010", "990", "1010.1", "1e3", "2*500"]] == [
        1.0, 1.0, 0.0, 1.0, 0.0]  # expressions are never evaluated
    default = rec(answer="0.1", answer_type="numeric")
    assert score_answer("\\boxed{0.1000000001}", default).correct and not score_answer("\\boxed{0.11}", default).score
    with pytest.raises(ConfigError, match="option 'abs_tol' must be a number"):
        parse_answer_type({"type": "numeric", "abs_tol": -1})


def half_credit(completion, record):
    """A custom answer type for the tests: 0.5 for any reply mentioning the gold answer, with the word as pred."""
    return (0.5, record.answer) if record.answer in completion else 0.0


NOT_CALLABLE = 3


def test_custom_function_and_bad_specs(monkeypatch):
    monkeypatch.setenv("TRIMPI_TRUST_CODE", "test_answers:half_credit,test_answers:missing,test_answers:NOT_CALLABLE,"
                                            "no_such_module_xyz:fn")
    r = rec(answer="cube", answer_type="test_answers:half_credit")
    assert score_answer("a cube", r).score == 0.5 and score_answer("a cube", r).pred == "cube"
    assert score_answer("a ball", r).score == 0.0
    assert accuracy_reward(["a cube"], [r]) == [score_example(r, "a cube", LEX)["score"]] == [0.5]
    for spec, message in [("no_such_module_xyz:fn", "cannot import"), ("test_answers:missing", "cannot import"),
                          ("test_answers:NOT_CALLABLE", "not callable"), (":fn", "expected 'package.module:function'"),
                          ("fuzzy", "expected one of clevr, exact"), ({"type": "exact", "case": True},
                                                                      "unknown option")]:
        with pytest.raises(ConfigError, match=message) as info:
            score_answer("x", rec(answer="x", answer_type=spec))
        assert "\n" not in str(info.value)


class FakeJudge:
    name = "fake-judge"
    prompt = "Rate 0-10 against the policy and rubric: {rubric}"

    def __init__(self):
        self.seen = []

    def __call__(self, record, response, rubric):
        self.seen.append((record.id, response, rubric))
        return (0.8, "Score: 8") if "policy" in response else (None, "no idea")


def test_judge_is_injected_and_recorded():
    r = rec(answer="", answer_type={"type": "judge", "rubric": "cites the policy"})
    judge = FakeJudge()
    row = score_example(r, "<think>hm</think>I follow the policy.", LEX, judge)
    assert row["score"] == 0.8 and row["judge"] == "fake-judge" and row["judge_prompt"] == FakeJudge.prompt
    assert row["judge_reply"] == "Score: 8" and judge.seen == [("r", "I follow the policy.", "cites the policy")]
    assert score_answer("whatever", r, Scoring(judge=judge)).score == 0.0  # unparsed rating scores 0
    assert score_answer("<think>only thinking</think>", r, Scoring(judge=judge)).pred is None
    _, parts = RewardSpec.parse(["accuracy"], None, Scoring(judge=judge)).score(["the policy says"], [r])
    assert parts["accuracy"] == [0.8]
    with pytest.raises(ConfigError, match="needs a judge"):
        score_answer("text", r)


def test_format_follows_the_answer_type():
    numeric = rec(answer="3", answer_type="numeric")
    assert format_ok("<think>count</think>\\boxed{3}", numeric)
    assert not format_ok("<think> </think>\\boxed{3}", numeric)
    assert not format_ok("\\boxed{3}", numeric)
    gta = rec("gta", json.dumps({"name": "OCR_v1", "arguments": {}}))
    assert format_reward(['<think>x</think>{"name": "OCR_v1"}', "<think>x</think>{oops"], [gta] * 2) == [1.0, 0.0]


class FakeClient:
    name = "fake-llm"

    def __init__(self, reply):
        self.reply, self.seen = reply, []

    def complete(self, conversations, max_tokens=512, temperature=0.0):
        self.seen += conversations
        return [self.reply] * len(conversations)


def test_eval_wires_an_llm_answer_judge_with_policy_and_rubric(tmp_path):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.json").write_text(json.dumps({"name": "P", "text": "Always greet first.",
                                                              "images": []}))
    r = Record(id="g1", task="support", query="Hi?", answer="Hello! How can I help?", response="",
               policy_path="policies/p.json", answer_type={"type": "judge", "rubric": "greets first"})
    client = FakeClient("Greets first and helps.\nScore: 9")
    row = score_example(r, "<think>greet</think>Hello there, how can I help?", LEX,
                        AnswerJudge(client, PolicyStore(tmp_path)))
    assert row["score"] == pytest.approx(0.9) and row["judge"] == "fake-llm"
    assert row["judge_reply"].endswith("Score: 9") and "{rubric}" in row["judge_prompt"]
    prompt = client.seen[0][0]["content"][0]["text"]
    assert "Always greet first." in prompt and "greets first" in prompt and "Hello there" in prompt
    assert "<think>" not in prompt  # the judge sees the answer, not the reasoning
    (tmp_path / "policies" / "p.json").write_text(json.dumps({"name": "P", "text": "Greet <image> users.",
                                                              "images": ["a.png"]}))
    pictured = AnswerJudge(FakeClient("Score: 9"), PolicyStore(tmp_path)).messages(r, "Hello", None)
    assert "Greet [image] users." in pictured[0]["content"][0]["text"]  # text-only: no bare image marker
    unreadable = score_example(r, "Hello", LEX, AnswerJudge(FakeClient("no rating"), PolicyStore(tmp_path)))
    assert unreadable["score"] == 0.0 and unreadable["judge_unparsed"]


def test_eval_without_a_judge_fails_before_generating(tmp_path):
    from trimpi.eval import EvalOptions, Subject, evaluate_model

    class Generated(Exception):
        pass

    class NoEngine:
        def generate(self, *a, **k):
            raise Generated

    rows = [Record(id=f"r{i}", task="support", query="Hi?", answer="Hello", response="",
                   answer_type="judge" if i == 2 else None) for i in range(3)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    template = type("Processor", (), {"apply_chat_template": lambda self, *a, **k: "prompt"})()
    subject = Subject(processor=template, engine=NoEngine())
    with pytest.raises(ConfigError, match=r"test\.jsonl: records with answer type 'judge' need --judge"):
        evaluate_model(subject, tmp_path, tmp_path / "out", EvalOptions(protocols=["accuracy"]))
    with pytest.raises(Generated):  # only the first two records are read, and they need no judge: it goes on
        evaluate_model(subject, tmp_path, tmp_path / "out", EvalOptions(protocols=["accuracy"], limit=2))


def explodes(completion, record):
    raise KeyError("boom")


def test_setup_faults_stop_rl_while_bad_completions_score_zero(monkeypatch):
    monkeypatch.setenv("TRIMPI_TRUST_CODE", "test_answers:explodes")
    judged = rec(answer="", answer_type="judge")
    with pytest.raises(ConfigError, match="record r: answer type 'judge' needs a judge"):
        RewardSpec().score(["an answer"], [judged])  # not a silent 0 for every sample
    custom = rec(answer="x", answer_type="test_answers:explodes", rid="c7")
    total, _ = RewardSpec().score(["anything"], [custom])
    assert total == [0.0]
    with pytest.raises(TrimpiError, match=r"^answer type 'test_answers:explodes' failed on record c7: KeyError"):
        score_example(custom, "anything", LEX)


def test_unreadable_gold_tool_call_is_a_data_error_everywhere():
    bad = rec("gta", "OCR please", rid="g9")
    with pytest.raises(DataError, match="^record g9: field 'answer' is not a JSON tool call"):
        score_example(bad, '{"name": "OCR_v1"}', LEX)
    with pytest.raises(DataError, match="^record g9"):
        RewardSpec().score(['{"name": "OCR_v1"}'], [bad])
