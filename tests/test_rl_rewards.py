"""Rewards: boxed exact match, format, robustness to garbage."""

import pytest

from trimpi.data.answers import extract_boxed
from trimpi.data.schema import Record
from trimpi.train.rl.rewards import RewardSpec, accuracy_reward, format_reward


def rec(task="clevr", answer="Case 3"):
    return Record(id="x", task=task, query="q", answer=answer, response=f"\\boxed{{{answer}}}")


def test_extract_boxed_nested_and_last():
    assert extract_boxed("a \\boxed{x} b \\boxed{Case {3}}") == "Case {3}"
    assert extract_boxed("\\boxed{unclosed") is None


def test_clevr_accuracy_and_format():
    r = rec()
    good = "<think>check 1.1</think>\n\\boxed{Case 3}"
    texts = [good, "\\boxed{Case 3}", "<think>x</think>\\boxed{Case 4}", "", "\\boxed{", "<think></think>"]
    assert accuracy_reward(texts, [r] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert format_reward(texts, [r] * 6) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_default_weights_and_never_crash():
    spec = RewardSpec()
    total, parts = spec.score(["<think>a</think>\\boxed{Case 3}", "", "\x00garbage{{{"], [rec()] * 3)
    assert total == pytest.approx([1.0, 0.0, 0.0])
    assert parts["format"] == [1.0, 0.0, 0.0]

    def boom(completions, records):
        if any(not c for c in completions):
            raise ValueError("empty")
        return [1.0] * len(completions)

    spec = RewardSpec(funcs={"boom": boom}, weights={"boom": 1.0})
    total, _ = spec.score(["ok", "", "ok"], [rec()] * 3)
    assert total == [1.0, 0.0, 1.0]


def test_gta_format_and_garbage_scores_zero():
    r = rec(task="gta", answer='{"name": "OCR_v1", "arguments": {"image": "image/a.jpg"}}')
    texts = ['<think>x</think>{"name": "OCR_v1", "arguments": {"image": "image/a.jpg"}}', "{not json", ""]
    assert format_reward(texts, [r] * 3) == [1.0, 0.0, 0.0]
    spec = RewardSpec()
    total, parts = spec.score(texts[1:], [r] * 2)
    assert total == [0.0, 0.0]


def test_parse_weights():
    spec = RewardSpec.parse(["accuracy", "format"], "accuracy=0.5,format=0.5")
    assert spec.weights == {"accuracy": 0.5, "format": 0.5}


def test_gta_reward_uses_overall_tool_call_score():
    gold = '{"name": "ImageDescription_v5", "arguments": {"image": "image/coffee.jpg"}}'
    r = rec(task="gta", answer=gold)
    wrong_version = '<think>x</think>{"name": "ImageDescription_v4", "arguments": {"image": "image/coffee.jpg"}}'
    total, parts = RewardSpec().score(["<think>describe</think>" + gold, gold, wrong_version], [r] * 3)
    assert parts["accuracy"] == [1.0, 1.0, 0.5]  # overall = (tool + argument) / 2
    assert total == pytest.approx([1.0, 0.9, 0.55])
