"""Decision-tree policies: semantics, constraints, verbalization, gold traces."""

import itertools
import re

import numpy as np
import pytest

from trimpi.data.clevr import policy as pol
from trimpi.data.clevr.cot import cited_conditions, gold_trace
from trimpi.data.clevr.questions import general_question
from trimpi.data.clevr.tree import ATTRIBUTE_VALUES, decide, leaf_labels, random_tree, trace, tree_depth
from trimpi.data.schema import IMAGE_MARKER


def random_objects(rng, n=None):
    n = n or int(rng.integers(3, 11))
    return [{a: vs[rng.integers(len(vs))] for a, vs in ATTRIBUTE_VALUES.items()} for _ in range(n)]


def trees(depth, count=20):
    return [random_tree(np.random.default_rng([depth, i]), depth) for i in range(count)]


@pytest.mark.parametrize("depth,leaves", [(2, {4}), (4, {16})])
def test_leaf_counts_small_depths_are_full_binary(depth, leaves):
    assert {len(leaf_labels(t)) for t in trees(depth)} == leaves


def test_depth6_branches_end_early_when_all_attribute_types_are_used():
    counts = [len(leaf_labels(t)) for t in trees(6)]
    assert all(50 <= c < 64 for c in counts)
    assert all(tree_depth(t) == 6 for t in trees(6))


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_tree_constraints(depth):
    for t in trees(depth):
        labels = leaf_labels(t)
        assert labels == [f"Case {k}" for k in range(1, len(labels) + 1)]  # unique, 1..L
        for node_id, node in t["nodes"].items():
            conj = node["if_exists"]
            for branch, suffix in (("yes", "1"), ("no", "2")):
                child = node[branch]
                if child.startswith("Case "):
                    continue
                assert child == f"{node_id}.{suffix}"
                child_conj = t["nodes"][child]["if_exists"]
                if branch == "yes":  # grows by exactly one new attribute type
                    assert set(conj.items()) < set(child_conj.items())
                    assert len(child_conj) == len(conj) + 1
                else:  # a fresh conjunction
                    assert len(child_conj) == 1
            if len(conj) == 4:
                assert node["yes"].startswith("Case ")


def test_leaf_labels_are_permuted_not_positional():
    firsts = {t["nodes"]["1.1"]["yes"] for t in trees(2, 40)}
    assert len(firsts) > 1


def test_no_condition_is_decided_by_its_ancestors():
    rng = np.random.default_rng(0)
    for t in trees(6, 10):
        for _ in range(30):
            objects = random_objects(rng)
            path, _ = trace(t, objects)
            assert path[0][0] == "1"
        # every node is reachable by some scene: no condition is a foregone conclusion
    for t in trees(4, 10):
        reached = set()
        for _ in range(3000):
            reached.update(n for n, _ in trace(t, random_objects(rng))[0])
        assert len(reached) >= len(t["nodes"]) - 2


def test_decide_matches_manual_walk():
    tree = {
        "root": "1",
        "nodes": {
            "1": {"if_exists": {"color": "cyan"}, "yes": "1.1", "no": "Case 2"},
            "1.1": {"if_exists": {"color": "cyan", "shape": "cube"}, "yes": "Case 3", "no": "Case 1"},
        },
    }
    cyan_sphere = {"shape": "sphere", "color": "cyan", "size": "small", "material": "metal"}
    red_cube = {"shape": "cube", "color": "red", "size": "large", "material": "rubber"}
    assert decide(tree, [red_cube]) == "Case 2"
    assert decide(tree, [cyan_sphere, red_cube]) == "Case 1"  # cyan and a cube, but no cyan cube
    assert decide(tree, [dict(cyan_sphere, shape="cube")]) == "Case 3"


def test_verbalization_lists_every_condition_once_root_first_not_nested():
    rng = np.random.default_rng(5)
    t = random_tree(rng, 4)
    order = pol.section_order(rng, list(t["nodes"]))
    text, images = pol.verbalize("L4-Test", t, order, pol.choose_crops(rng, t, "T"))
    ids = re.findall(r"^Condition ([\d.]+):", text, flags=re.M)
    assert sorted(ids) == sorted(t["nodes"]) and ids[0] == "1"
    assert ids != sorted(ids, key=lambda s: [int(x) for x in s.split(".")])
    assert "Policy: L4-Test" in text and images == [] and IMAGE_MARKER not in text
    for node_id, node in t["nodes"].items():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"Condition {node_id}:"))
        for value in node["if_exists"].values():
            assert value in line


def test_variant_m_crops_never_show_size_and_markers_match_images():
    seen = set()
    for i in range(20):
        rng = np.random.default_rng(i)
        t = random_tree(rng, 4)
        crops = pol.choose_crops(rng, t, "M")
        text, images = pol.verbalize("L4-Test", t, list(t["nodes"]), crops)
        assert text.count(IMAGE_MARKER) == len(images)
        assert all(attr != "size" for attr, _ in images)
        seen.update(attr for attr, _ in images)
        for node_id, shown in crops.items():  # a cropped value is not also spelled out
            line = next(ln for ln in text.splitlines() if ln.startswith(f"Condition {node_id}:"))
            for attr in shown:
                assert f" {t['nodes'][node_id]['if_exists'][attr]} " not in line.split("?")[0] + " "
    assert seen == {"color", "shape", "material"}


def test_policy_names_unique_and_pronounceable():
    rng = np.random.default_rng(0)
    taken = set()
    names = [pol.policy_name(rng, 6, taken) for _ in range(200)]
    assert len(set(names)) == 200
    assert all(re.fullmatch(r"L6-([BDFGKLMNPRSTVZ][aeiou])([bdfgklmnprstvz][aeiou]){2}", n) for n in names)


def test_gold_trace_cites_exactly_the_path():
    rng = np.random.default_rng(1)
    for t, k in itertools.product(trees(6, 5), range(20)):
        objects = random_objects(rng)
        path, expected = trace(t, objects)
        for style in ("full", "compact"):
            text, leaf = gold_trace("L6-X", t, objects, style)
            assert leaf == expected and cited_conditions(text) == path
            assert text.rstrip().endswith(f"the response is {expected}.")
            assert ("The image shows" in text) == (style == "full")


def test_general_questions_are_answered_by_the_scene():
    rng = np.random.default_rng(2)
    for _ in range(200):
        objects = random_objects(rng)
        kind, question, answer = general_question(rng, objects)
        if kind == "count":
            assert answer.isdigit() and int(answer) <= len(objects)
        elif kind == "exist":
            assert answer in ("yes", "no")
        else:
            attr = question.split()[3]
            assert answer in ATTRIBUTE_VALUES[attr]


def test_restated_policy_lines_cite_nothing():
    policy_line = "Condition 1: Is there a cyan object in the image? If yes, go to Condition 1.1. If no, the response is Case 2."
    assert cited_conditions(policy_line) == []
    assert cited_conditions("Condition 1.2: Is there a red cube? no, none.\nCondition 1.2.1: Is there a cube? YES") == [
        ("1.2", False), ("1.2.1", True)]
