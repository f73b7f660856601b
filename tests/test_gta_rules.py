"""Rule engine vs an independently written boundary table, and policy text vs engine."""

from __future__ import annotations

import itertools
import re

import pytest

from trimpi.data.gta.policy import ACCOUNT_TYPES, BASE_RULES, OVERRIDE_RULES, TOOL_NAMES, rule_set
from trimpi.data.gta.rules import base_tool, check_profile, matching_branches, versioned_name
from trimpi.data.gta.text import OVERRIDE_HEADER, policy_json, policy_text
from trimpi.errors import DataError


def P(acct: str, credits: int, age: int = 30) -> dict:
    return {"account_type": acct, "credits": credits, "age": age}


# Written from SPEC §3 by hand, not from the engine: (tool, profile, expected name).
BASE_TABLE = [
    ("ImageDescription", P("A", 0), "ImageDescription_v5"),
    ("ImageDescription", P("A", 1000), "ImageDescription_v5"),
    ("ImageDescription", P("B", 500), "ImageDescription_v3"),
    ("ImageDescription", P("B", 501), "ImageDescription_v4"),
    ("ImageDescription", P("C", 500), "ImageDescription_v3"),
    ("ImageDescription", P("C", 501), "ImageDescription_v4"),
    ("ImageDescription", P("D", 500), "ImageDescription_v1"),
    ("ImageDescription", P("D", 501), "ImageDescription_v2"),
    ("OCR", P("A", 250), "OCR_v5"),
    ("OCR", P("D", 250, 15), "OCR_v5"),
    ("OCR", P("A", 251), "OCR_v4"),
    ("OCR", P("B", 251), "OCR_v4"),
    ("OCR", P("C", 251), "OCR_v3"),
    ("OCR", P("D", 251), "OCR_v3"),
    ("OCR", P("A", 750), "OCR_v4"),
    ("OCR", P("C", 750), "OCR_v3"),
    ("OCR", P("A", 751, 20), "OCR_v2"),
    ("OCR", P("C", 751, 21), "OCR_v1"),
    ("OCR", P("D", 1000, 60), "OCR_v1"),
    ("GoogleSearch", P("A", 900, 20), "GoogleSearch_v1"),
    ("GoogleSearch", P("A", 100, 20), "GoogleSearch_v1"),
    ("GoogleSearch", P("B", 499, 21), "GoogleSearch_v2"),
    ("GoogleSearch", P("B", 500, 21), "GoogleSearch_v3"),
    ("GoogleSearch", P("D", 500, 60), "GoogleSearch_v3"),
    ("TextToImage", P("A", 0), "TextToImage_v1"),
    ("TextToImage", P("B", 900), "TextToImage_v1"),
    ("TextToImage", P("C", 100), "TextToImage_v1"),
    ("TextToImage", P("D", 500), "TextToImage_v3"),
    ("TextToImage", P("D", 501), "TextToImage_v2"),
    ("RegionAttributeDescription", P("A", 0), "RegionAttributeDescription_v2"),
    ("RegionAttributeDescription", P("B", 0), "RegionAttributeDescription_v2"),
    ("RegionAttributeDescription", P("C", 999), "RegionAttributeDescription_v1"),
    ("RegionAttributeDescription", P("D", 999), "RegionAttributeDescription_v1"),
    ("CountGivenObject", P("A", 249), "CountGivenObject_v1"),
    ("CountGivenObject", P("A", 250), "CountGivenObject_v2"),
    ("CountGivenObject", P("A", 499), "CountGivenObject_v2"),
    ("CountGivenObject", P("A", 500), "CountGivenObject_v3"),
    ("CountGivenObject", P("A", 749), "CountGivenObject_v3"),
    ("CountGivenObject", P("A", 750), "CountGivenObject_v4"),
    ("ImageStylization", P("A", 0, 20), "ImageStylization_v1"),
    ("ImageStylization", P("A", 0, 21), "ImageStylization_v2"),
    ("ImageStylization", P("A", 0, 59), "ImageStylization_v2"),
    ("ImageStylization", P("A", 0, 60), "ImageStylization_v3"),
    ("Calculator", P("D", 0, 13), "Calculator"),
    ("MathOCR", P("A", 900), "MathOCR"),
    ("TextToBbox", P("B", 300), "TextToBbox"),
]

OVERRIDE_TABLE = [
    ("OCR", P("A", 250), "OCR_v1"),
    ("OCR", P("B", 251), "OCR_v2"),
    ("OCR", P("C", 750), "OCR_v3"),
    ("OCR", P("A", 751, 20), "OCR_v4"),
    ("OCR", P("A", 751, 21), "OCR_v5"),
    ("ImageDescription", P("A", 0), "ImageDescription_v1"),
    ("ImageDescription", P("B", 501), "ImageDescription_v2"),
    ("ImageDescription", P("D", 500), "ImageDescription_v5"),
    ("GoogleSearch", P("A", 0, 20), "GoogleSearch_v3"),
    ("GoogleSearch", P("A", 499, 21), "GoogleSearch_v1"),
    ("GoogleSearch", P("A", 500, 21), "GoogleSearch_v2"),
    ("CountGivenObject", P("A", 249), "CountGivenObject_v4"),
    ("CountGivenObject", P("A", 750), "CountGivenObject_v1"),
    ("ImageStylization", P("A", 0, 60), "ImageStylization_v3"),  # unchanged by the override
    ("TextToImage", P("D", 501), "TextToImage_v2"),
]

GRID = [
    P(a, c, g)
    for a, c, g in itertools.product(
        ACCOUNT_TYPES, (0, 1, 249, 250, 251, 499, 500, 501, 749, 750, 751, 1000), (13, 20, 21, 22, 59, 60, 61, 90)
    )
]


@pytest.mark.parametrize(("tool", "profile", "expected"), BASE_TABLE)
def test_base_rules_at_boundaries(tool, profile, expected):
    assert versioned_name(tool, profile) == expected


@pytest.mark.parametrize(("tool", "profile", "expected"), OVERRIDE_TABLE)
def test_override_rules_at_boundaries(tool, profile, expected):
    assert versioned_name(tool, profile, override=True) == expected


@pytest.mark.parametrize("override", [False, True])
def test_exactly_one_branch_matches_every_profile(override):
    for tool, profile in itertools.product(rule_set(override), GRID):
        assert len(matching_branches(tool, profile, override)) == 1, (tool, profile)


def test_every_version_is_reachable():
    for tool, branches in BASE_RULES.items():
        reached = {versioned_name(tool, p) for p in GRID}
        assert len(reached) == len(branches), tool


def test_base_tool_and_unknown_tool():
    assert base_tool("OCR_v4") == "OCR"
    assert base_tool("Calculator") == "Calculator"
    with pytest.raises(DataError):
        versioned_name("Teleport", P("A", 0))


@pytest.mark.parametrize("bad", [P("E", 0), P("A", -1), P("A", "10"), {"account_type": "A", "credits": 5}])
def test_check_profile_rejects(bad):
    with pytest.raises(DataError, match="profile: field"):
        check_profile(bad)


# ---- policy text states every rule the engine applies -------------------------------------
_LINE = re.compile(r"^- If (?P<conds>.+): call (?P<tool>[A-Za-z]+)_v(?P<v>\d+)\.$")
_ACCT = re.compile(r"^account type is (?P<types>[A-D](?: or [A-D])*)$")
_NUM = re.compile(r"^(?P<field>credits|age) (?P<op><|≤|>|≥) (?P<value>\d+)$")
_OPS = {"<": lambda a, b: a < b, "≤": lambda a, b: a <= b, ">": lambda a, b: a > b, "≥": lambda a, b: a >= b}


def _parse_condition(text: str):
    if m := _ACCT.match(text):
        types = m.group("types").split(" or ")
        return lambda p: p["account_type"] in types
    m = _NUM.match(text)
    assert m, f"unparseable condition {text!r}"
    field, op, value = m.group("field"), _OPS[m.group("op")], int(m.group("value"))
    return lambda p: op(p[field], value)


def parse_rules_from_text(text: str) -> dict[str, list]:
    """Rules read back from the policy text alone; an override section replaces whole tools."""
    base, _, override = text.partition(OVERRIDE_HEADER)
    rules: dict[str, list] = {}
    for part in (base, override):
        found: dict[str, list] = {}
        for line in part.splitlines():
            if m := _LINE.match(line.strip()):
                conds = [_parse_condition(c) for c in m.group("conds").split(" and ")]
                found.setdefault(m.group("tool"), []).append((conds, f"{m.group('tool')}_v{m.group('v')}"))
        rules.update(found)
    return rules


def _decide(rules, tool, profile):
    hits = [name for conds, name in rules[tool] if all(c(profile) for c in conds)]
    assert len(hits) == 1, (tool, profile, hits)
    return hits[0]


@pytest.mark.parametrize("override", [False, True])
def test_policy_text_states_every_rule_the_engine_applies(override):
    rules = parse_rules_from_text(policy_text(override))
    assert set(rules) == set(rule_set(override))
    for tool, branches in rule_set(override).items():
        assert len(rules[tool]) == len(branches), tool
    for tool, profile in itertools.product(rule_set(override), GRID):
        assert _decide(rules, tool, profile) == versioned_name(tool, profile, override)


def test_policy_text_mentions_every_tool_rule_and_tip():
    text = policy_text()
    for name in TOOL_NAMES:
        assert f"### {name}\n" in text
    assert "MathOCR instead of any OCR version" in text
    assert "k=1 for closed" in text and "TextToBbox before RegionAttributeDescription" in text
    assert OVERRIDE_HEADER not in text
    over = policy_text(override=True)
    assert over.startswith(text) and OVERRIDE_HEADER in over
    assert set(OVERRIDE_RULES) <= set(parse_rules_from_text(over.partition(OVERRIDE_HEADER)[2]))


def test_policy_json_shape():
    data = policy_json()
    assert data["name"] == "GTAPolicy" and data["images"] == [] and data["text"] == policy_text()
    assert policy_json(True)["name"] == data["name"]
    assert data["rules"]["OCR"][0] == {"if": [{"field": "credits", "op": "<=", "value": 250}], "version": 5}
