"""The smaller faults of issue 27, one test each, named after the fault (the hostile-input suite runs the
command-line ones too)."""

from __future__ import annotations

import json
import re

import pytest


def test_safe_eval_zero_to_a_negative_power_is_unsafe_not_a_crash():
    from trimpi.data.gta.safe_eval import UnsafeExpression, safe_eval

    with pytest.raises(UnsafeExpression, match="division by zero"):
        safe_eval("0**-1")


def test_tool_score_survives_an_argument_that_divides_by_zero():
    from trimpi.data.gta.metrics import score_tool_call
    from trimpi.data.gta.scorers import LexicalScorer

    call = {"name": "Calculator_v1", "arguments": {"expression": "0**-1"}}
    gold = {"name": "Calculator_v1", "arguments": {"expression": "2+2"}}
    parts = score_tool_call(json.dumps(call), json.dumps(gold), LexicalScorer())
    assert parts["tool"] == 1.0 and parts["argument"] == 0.0


@pytest.mark.parametrize("field,value,shown", [("answer", 3, "3"), ("answer", None, "null"), ("response", None, "null"),
                                               ("query", ["x"], '["x"]')])
def test_record_text_fields_must_be_text(field, value, shown):
    from trimpi.data.schema import Record
    from trimpi.errors import DataError

    row = {"id": "r", "task": "custom", "images": [], "query": "q", "answer": "a", "response": "a", field: value}
    with pytest.raises(DataError, match=rf"^train.jsonl:4: field '{field}' must be text, got {re.escape(shown)}"):
        Record.from_dict(row, where="train.jsonl:4")


def test_misspelled_recipe_key_is_named_as_given():
    from trimpi.errors import ConfigError
    from trimpi.pipeline.recipe import parse_recipe

    with pytest.raises(ConfigError, match=r"^recipe: modle: unknown key \(did you mean 'model'\?\)$"):
        parse_recipe({"modle": "micro", "data": {"path": "d"}, "methods": ["in_context"]})


def test_truncated_safetensors_in_a_resumed_checkpoint_is_one_line(tmp_path):
    import torch
    from safetensors.torch import save_file

    from trimpi.errors import TrimpiError
    from trimpi.train.stage import check_checkpoint_weights, weights_problem

    path = tmp_path / "checkpoint-2" / "model.safetensors"
    path.parent.mkdir()
    save_file({"w": torch.zeros(64, 64)}, str(path))
    assert weights_problem(path) is None
    path.write_bytes(path.read_bytes()[:5000])  # a disk that filled while saving
    with pytest.raises(TrimpiError, match=r"model.safetensors: cut short \(5000 of \d+ bytes\); remove checkpoint-2"):
        check_checkpoint_weights(path.parent)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert weights_problem(path) == "not a safetensors file"
