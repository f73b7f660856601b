"""Policy referral: exact scores of crafted responses against paths walked by the test itself."""

from __future__ import annotations

import json

import pytest
from test_eval_fixtures import ScriptedEngine, by_image, read_rows

from trimpi.data.schema import load_records
from trimpi.eval import EvalOptions, Subject, evaluate_model
from trimpi.eval.referral import referral_match


@pytest.fixture(scope="module")
def processor(dataset):
    from test_eval_fixtures import tiny_for

    return tiny_for(dataset)[1]


def walk(dataset, record) -> list[tuple[str, bool]]:
    """The test's own walk of the saved tree on the saved scene graph."""
    policy = json.loads((dataset / record.policy_path).read_text())
    objects = json.loads((dataset / record.scene).read_text())["objects"]
    ref, path = policy["root"], []
    while not ref.startswith("Case "):
        node = policy["nodes"][ref]
        found = any(all(o[k] == v for k, v in node["if_exists"].items()) for o in objects)
        path.append((ref, found))
        ref = node["yes" if found else "no"]
    return path


def cite(steps: list[tuple[str, bool]]) -> str:
    lines = [f"Condition {c}: Is there such an object? {'Yes' if o else 'No'}, I checked." for c, o in steps]
    return "<think>I follow the policy.\n" + "\n".join(lines) + "</think>\n\\boxed{Case 1}"


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def test_exact_and_partial_referral_of_crafted_responses(dataset, processor, tmp_path):
    records = load_records(dataset / "test.jsonl")
    paths = [walk(dataset, r) for r in records]
    assert all(len(p) == 2 for p in paths)  # depth-2 trees: two conditions on every path here
    texts, expected = [], []
    for i, path in enumerate(paths):
        kind = i % 6
        if kind == 0:  # the whole path
            texts.append(cite(path)); expected.append((1.0, 1.0))
        elif kind == 1:  # first step only: precision 1, recall 1/2
            texts.append(cite(path[:1])); expected.append((0.0, f1(1.0, 0.5)))
        elif kind == 2:  # first outcome flipped: 1 of 2 right on both sides
            texts.append(cite([(path[0][0], not path[0][1]), path[1]])); expected.append((0.0, f1(0.5, 0.5)))
        elif kind == 3:  # no citation at all
            texts.append("\\boxed{Case 1}"); expected.append((0.0, 0.0))
        elif kind == 4:  # the path plus one wrong extra citation: precision 2/3, recall 1
            texts.append(cite(path + [("9.9", True)])); expected.append((0.0, f1(2 / 3, 1.0)))
        else:  # right pairs, wrong order
            texts.append(cite(path[::-1])); expected.append((0.0, 1.0))
    subject = Subject(processor=processor, engine=ScriptedEngine(by_image(dataset, records, texts)), name="scripted")
    out = tmp_path / "out"
    res = evaluate_model(subject, dataset, out, EvalOptions(protocols=["referral"], progress=False))
    summary = res["T-d2"]["protocols"]["referral"]
    n = len(records)
    assert summary["method"] == "exact" and summary["n"] == n
    assert summary["exact"] == pytest.approx(sum(e for e, _ in expected) / n)
    assert summary["partial"] == pytest.approx(sum(p for _, p in expected) / n)
    assert summary["cites_any"] == pytest.approx(sum(i % 6 != 3 for i in range(n)) / n)
    rows = read_rows(out / "predictions_referral.jsonl")
    for row, path, (e, p) in zip(rows, paths, expected, strict=True):
        assert [tuple(x) for x in row["path"]] == path
        assert row["exact"] == e and row["partial"] == pytest.approx(p)


def test_referral_match_edge_cases():
    path = [("1", True), ("1.1", False)]
    assert referral_match(path, path) == {"exact": 1.0, "precision": 1.0, "recall": 1.0, "partial": 1.0}
    doubled = referral_match(path + path, path)  # repeating a citation is not a second match
    assert doubled["precision"] == 0.5 and doubled["recall"] == 1.0 and doubled["exact"] == 0.0
    assert referral_match([], path)["partial"] == 0.0
