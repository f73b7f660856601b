"""Tool-call parsing and scoring: per-type argument scores, totality on odd inputs, safe evaluator."""

from __future__ import annotations

import json
import random

import pytest

from trimpi.data.gta.metrics import box_iou, parse_bbox, parse_tool_call, score_many, score_tool_call
from trimpi.data.gta.safe_eval import UnsafeExpression, safe_eval
from trimpi.data.gta.scorers import lexical_scorer

GOLD = {"name": "OCR_v4", "arguments": {"image": "image/a.jpg"}}
LEX = lexical_scorer()


def call(name, **args):
    return json.dumps({"name": name, "arguments": args})


def test_exact_call_scores_one():
    assert score_tool_call(call("OCR_v4", image="image/a.jpg"), GOLD) == {"tool": 1.0, "argument": 1.0, "overall": 1.0}
    assert score_tool_call(call("OCR_v4", image="image/a.jpg"), json.dumps(GOLD))["overall"] == 1.0


def test_wrong_version_keeps_argument_score():
    assert score_tool_call(call("OCR_v3", image="image/a.jpg"), GOLD) == {"tool": 0.0, "argument": 1.0, "overall": 0.5}


def test_prose_think_and_openai_shapes():
    text = '<think>maybe {"name": "OCR_v1"}</think>Sure! Here: ' + call("OCR_v4", image="image/a.jpg") + " Done."
    assert score_tool_call(text, GOLD)["overall"] == 1.0
    openai = json.dumps(
        {"tool_calls": [{"function": {"name": "OCR_v4", "arguments": json.dumps({"image": "image/a.jpg"})}}]}
    )
    assert parse_tool_call(openai) == GOLD
    assert parse_tool_call("```json\n" + call("OCR_v4", image="image/a.jpg") + "\n```") == GOLD


def test_missing_argument_zero_extra_ignored():
    gold = {"name": "DrawBox", "arguments": {"image": "i.jpg", "bbox": "(0, 0, 10, 10)", "annotation": "cat"}}
    s = score_tool_call(call("DrawBox", image="i.jpg", bbox="(0, 0, 10, 10)", extra="x"), gold, LEX)
    assert s["argument"] == pytest.approx(2 / 3)


def test_exact_types_k_top1_position():
    gold = {"name": "GoogleSearch_v2", "arguments": {"query": "eiffel tower height", "k": 1}}
    assert score_tool_call(call("GoogleSearch_v2", query="eiffel tower height", k="1"), gold, LEX)["argument"] == 1.0
    assert score_tool_call(call("GoogleSearch_v2", query="eiffel tower height", k=4), gold, LEX)["argument"] == 0.5
    gold = {"name": "TextToBbox", "arguments": {"top1": True}}
    assert score_tool_call(call("TextToBbox", top1="true"), gold)["argument"] == 1.0
    assert score_tool_call(call("TextToBbox", top1=False), gold)["argument"] == 0.0
    gold = {"name": "AddText", "arguments": {"position": "(10, 20)", "color": "red"}}
    assert score_tool_call(call("AddText", position="(10,20)", color="Red"), gold)["argument"] == 1.0


def test_expression_numeric_equality():
    gold = {"name": "Calculator", "arguments": {"expression": "(12 + 8) * 3 - 15"}}
    assert score_tool_call(call("Calculator", expression="60 - 15"), gold)["argument"] == 1.0
    assert score_tool_call(call("Calculator", expression="0.1+0.2-0.3+45"), gold)["argument"] == 1.0
    assert score_tool_call(call("Calculator", expression="44"), gold)["argument"] == 0.0
    assert score_tool_call(call("Calculator", expression="__import__('os').system('x')"), gold)["argument"] == 0.0
    assert score_tool_call(call("Calculator", expression=45), gold)["argument"] == 1.0


def test_bbox_iou():
    assert parse_bbox("(0, 0, 10, 10)") == (0, 0, 10, 10)
    assert parse_bbox([10, 10, 0, 0]) == (0, 0, 10, 10)
    assert parse_bbox("(1, 2, 3)") is None
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 20)) == pytest.approx(0.5)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    gold = {"name": "DrawBox", "arguments": {"bbox": "(0, 0, 10, 10)"}}
    assert score_tool_call(call("DrawBox", bbox="(5, 0, 15, 10)"), gold)["argument"] == pytest.approx(1 / 3)


def test_text_arguments_use_the_scorer():
    gold = {"name": "ImageStylization_v2", "arguments": {"instruction": "turn it into a watercolor painting"}}
    s = score_tool_call(call("ImageStylization_v2", instruction="make it a watercolor painting"), gold, LEX)
    assert 0.3 < s["argument"] < 1.0


ODD = [
    "",
    " ",
    "null",
    "[]",
    "{}",
    "{",
    "}",
    "{{{{",
    '{"name": 5}',
    '{"name": "OCR_v4", "arguments": 7}',
    '{"name": "OCR_v4", "arguments": "not json"}',
    '{"name": "OCR_v4", "arguments": {"image": null}}',
    '{"name": "OCR_v4", "arguments": {"image": [1, {"a": 2}]}}',
    "NaN",
    "\x00\x01\x02",
    "<think>",
    "</think>",
    '<think>unclosed {"name": "OCR_v4"',
    "\ud800",
    '{"name": "OCR_v4", "arguments": {"image": "image/a.jpg"}',
    "[" * 5000 + "]" * 5000,
    '{"a":' * 3000,
    "{" * 200_000,
    "x" * 1_000_000,
    json.dumps({"name": "x" * 100_000}),
]


@pytest.mark.parametrize("text", ODD)
def test_scoring_is_total_on_odd_inputs(text):
    for gold in (
        GOLD,
        {"name": "Calculator", "arguments": {"expression": "2**10"}},
        {"name": "DrawBox", "arguments": {"bbox": "(0, 0, 1, 1)", "annotation": "a"}},
    ):
        s = score_tool_call(text, gold, LEX)
        assert set(s) == {"tool", "argument", "overall"} and all(0.0 <= v <= 1.0 for v in s.values())


def test_scoring_is_total_on_random_mutations():
    rng = random.Random(0)
    base = call("DrawBox", image="image/a.jpg", bbox="(1, 2, 3, 4)", annotation="cat")
    gold = json.loads(base)
    alphabet = '{}[]":,\\ abc0123456789.-eE<>/\n\t\u00e9'
    for _ in range(400):
        chars = list(base)
        for _ in range(rng.randint(1, 8)):
            op, i = rng.random(), rng.randrange(len(chars) + 1)
            if op < 0.4 and chars:
                del chars[min(i, len(chars) - 1)]
            elif op < 0.8:
                chars.insert(i, rng.choice(alphabet))
            else:
                chars[min(i, len(chars) - 1)] = rng.choice(alphabet)
        s = score_tool_call("".join(chars), gold, LEX)
        assert all(0.0 <= v <= 1.0 for v in s.values())


@pytest.mark.timeout(120)  # guards against quadratic parsing of huge input
def test_non_string_predictions_and_huge_input_score_zero():
    for pred in (None, 5, b"bytes", ["list"]):
        assert score_tool_call(pred, GOLD) == {"tool": 0.0, "argument": 0.0, "overall": 0.0}
    assert score_tool_call('{"name": "a", ' * 100_000, GOLD)["tool"] == 0.0
    assert score_tool_call("{" * 1_000_000, GOLD)["overall"] == 0.0


def test_score_many_records_scorer():
    out = score_many([call("OCR_v4", image="image/a.jpg"), "junk"], [GOLD, GOLD], LEX)
    per_tool = {"OCR": {"tool": 0.5, "argument": 0.5, "overall": 0.5, "n": 2}}
    assert out == {"tool": 0.5, "argument": 0.5, "overall": 0.5, "n": 2, "scorer": "lexical-f1", "per_tool": per_tool}
    assert score_many([], [], LEX)["n"] == 0


def test_bad_gold_raises():
    with pytest.raises(ValueError):
        score_tool_call("x", "not a call")


# ---- safe evaluator ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("1+2*3", 7),
        ("(12 + 8) × 3 − 15", 45),
        ("2^10", 1024),
        ("7/2", 3.5),
        ("-3 ** 2", -9),
        ("7 // 2 + 7 % 2", 4),
        ("1.5e3", 1500.0),
        ("3 + 4 =", 7),
    ],
)
def test_safe_eval_arithmetic(expr, value):
    assert safe_eval(expr) == value


@pytest.mark.parametrize(
    "expr",
    [
        "x + 1",
        "abs(-1)",
        "__import__('os')",
        "(1).real",
        "[1][0]",
        "'a' * 3",
        "1 < 2",
        "True + 1",
        "lambda: 1",
        "9 ** 9 ** 9",
        "2 ** 100000",
        "10 ** 5000",
        "(10 ** 400) ** 20",
        "1e308 * 10",
        "1 / 0",
        "(-8) ** 0.5",
        "1" * 2000,
        "(" * 500 + "1" + ")" * 500,
        "",
        "1,000",
        "a.b",
        "print(1)",
        "open('f')",
    ],
)
def test_safe_eval_rejects(expr):
    with pytest.raises(UnsafeExpression):
        safe_eval(expr)


def test_no_eval_or_exec_in_package():
    import pathlib
    import re

    import trimpi.data.gta as pkg

    builtin_call = re.compile(r"(?<![\w.])(eval|exec|compile)\(")
    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        assert not builtin_call.search(path.read_text()), path
