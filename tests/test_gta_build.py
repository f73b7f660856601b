"""build_gta: layout, determinism, splits, records, rendering, CoT and override."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_gta_loader import make_release

from trimpi.data.gta.build import build_gta, split_queries
from trimpi.data.gta.metrics import score_tool_call
from trimpi.data.gta.rules import versioned_name
from trimpi.data.io import sha256_file
from trimpi.data.schema import PolicyStore, load_policy, load_records, render_messages
from trimpi.errors import DataError, TrimpiError

SPLITS = ("train", "train_cot", "test", "override_test")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_gta(out=tmp_path_factory.mktemp("gta") / "out", seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_manifest(built):
    m = json.loads((built / "manifest.json").read_text())
    for name in SPLITS:
        assert m["counts"][name] == len(load_records(built / f"{name}.jsonl")) > 0
    assert m["counts"]["train"] == m["counts"]["train_cot"] == m["steps"]["train"]
    assert m["counts"]["test"] == m["counts"]["override_test"] == m["steps"]["test"]
    assert "not the GTA benchmark" in m["source"]
    assert m["scorer"]["default"] in ("bertscore-f1:all-MiniLM-L6-v2", "lexical-f1")
    for rel, digest in m["files"].items():
        assert sha256_file(built / rel) == digest
    assert set(m["files"]) == set(_files(built)) - {"manifest.json", ".trimpi"}  # the ownership mark
    assert not set(m["queries"]["train"]) & set(m["queries"]["test"])


def test_same_seed_byte_identical_other_seed_differs(built, tmp_path):
    again = build_gta(out=tmp_path / "again", seed=0)
    assert _files(again) == _files(built)
    other = build_gta(out=tmp_path / "other", seed=1)
    assert (other / "train.jsonl").read_bytes() != (built / "train.jsonl").read_bytes()


def test_records_follow_the_engine_and_split_by_query(built):
    m = json.loads((built / "manifest.json").read_text())
    for split in SPLITS:
        override = split == "override_test"
        for r in load_records(built / f"{split}.jsonl"):
            assert r.task == "gta" and r.policy == "GTAPolicy" and r.split == split
            assert (built / r.policy_path).is_file() and all((built / p).is_file() for p in r.images)
            gold = json.loads(r.answer)
            assert r.response == r.answer and list(gold) == ["name", "arguments"]
            assert gold["name"] == versioned_name(r.meta["tool"], r.meta["profile"], override)
            assert score_tool_call(r.response, r.answer)["overall"] == 1.0
            assert r.meta["query_id"] in m["queries"]["train" if split.startswith("train") else "test"]
            assert "GTAPolicy" in r.query and "User profile:" in r.query and "Instruction:" in r.query
            assert "## Tool-version rules" not in r.query  # the policy is not in the query


def test_cot_cites_profile_rule_and_purpose(built):
    rows = load_records(built / "train_cot.jsonl")
    assert all(r.reasoning for r in rows)
    for r in rows:
        p = r.meta["profile"]
        assert f"Step {r.meta['step']}: the purpose is to {r.meta['purpose']}" in r.reasoning
        assert r.reasoning.rstrip().endswith(r.answer)
        if r.meta["rule"]:
            assert r.meta["rule"] in r.reasoning
            assert f"account type {p['account_type']}; credits {p['credits']}; age {p['age']}" in r.reasoning
    assert any("MathOCR instead of any OCR version" in r.reasoning for r in rows if r.meta["tool"] == "MathOCR")
    assert all(r.reasoning is None for r in load_records(built / "train.jsonl"))


def test_override_policy_and_answers(built):
    base, over = load_policy(built / "policies/GTAPolicy.json"), load_policy(built / "policies/GTAPolicy-override.json")
    assert base.name == over.name == "GTAPolicy" and "## RULE OVERRIDE" in over.text
    test, ot = load_records(built / "test.jsonl"), load_records(built / "override_test.jsonl")
    assert [r.meta["profile"] for r in test] == [r.meta["profile"] for r in ot]
    assert all(r.policy_path == "policies/GTAPolicy-override.json" for r in ot)
    m = json.loads((built / "manifest.json").read_text())
    assert m["override_changed_answers"] == sum(a.answer != b.answer for a, b in zip(test, ot, strict=True)) > 0


def test_render_with_and_without_policy(built):
    r = load_records(built / "test.jsonl")[0]
    store = PolicyStore(built)
    plain = render_messages(r, built)
    with_policy = render_messages(r, built, policy=store.get(r))
    assert [m["role"] for m in plain] == ["user"]
    assert with_policy[0]["role"] == "system" and "OCR version rules" in with_policy[0]["content"][0]["text"]


def test_profiles_per_step_and_release_input(tmp_path):
    release = make_release(tmp_path / "gta", {str(i): _two_step(i) for i in range(5)})
    out = build_gta(out=tmp_path / "out", gta_dir=release, profiles_per_step=3, seed=4)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["train"] == 3 * m["steps"]["train"] and m["counts"]["test"] == m["steps"]["test"]
    assert len(m["queries"]["test"]) == 1 and (out / "images/image/a.jpg").is_file()
    ids = [r.id for r in load_records(out / "train.jsonl")]
    assert len(ids) == len(set(ids))


def _two_step(i: int) -> dict:
    from test_gta_loader import _item

    item = _item()
    item["dialogs"].insert(
        3,
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "Calculator", "arguments": {"expression": f"{i} + 1"}}}],
        },
    )
    item["dialogs"].insert(
        4, {"role": "tool", "name": "Calculator", "content": {"type": "text", "content": str(i + 1)}}
    )
    return item


def test_atomic_and_overwrite(tmp_path):
    release = make_release(tmp_path / "gta", {"0": _two_step(0), "1": {"files": "bad", "dialogs": []}})
    out = tmp_path / "out"
    with pytest.raises(DataError):
        build_gta(out=out, gta_dir=release)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    (tmp_path / "gta/dataset.json").write_text(json.dumps({"0": _two_step(0), "1": _two_step(1)}))
    build_gta(out=out, gta_dir=release)
    with pytest.raises(TrimpiError, match="overwrite"):
        build_gta(out=out, gta_dir=release)
    build_gta(out=out, gta_dir=release, overwrite=True, seed=2)
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 2


def test_split_queries_disjoint_and_deterministic():
    ids = [str(i) for i in range(40)]
    train, test = split_queries(ids, seed=3)
    assert not set(train) & set(test) and sorted(train + test, key=int) == sorted(ids, key=int)
    assert len(test) == 8 and split_queries(ids, seed=3) == (train, test)
    assert split_queries(["a", "b"], 0)[1] and split_queries(["a"], 0) == (["a"], [])
