"""End-to-end ClevrPolicy builds: answers, files, determinism, atomicity, CLEVR releases, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from trimpi.data.clevr import build as build_mod
from trimpi.data.clevr.build import ClevrConfig, build_clevr
from trimpi.data.clevr.cot import cited_conditions
from trimpi.data.io import read_jsonl
from trimpi.data.preview import write_preview
from trimpi.errors import ConfigError, DataError, TrimpiError

SMALL = dict(depths=[2, 4], variant="M", policies=3, train_per_policy=6, test=9, cot=5, general=4,
             width=64, height=48, workers=1)
SPLITS = ("train", "train_cot", "test", "override_test", "general_test")


def walk(policy_json: dict, objects: list[dict]) -> tuple[list[tuple[str, bool]], str]:
    """Reference evaluation written from the documented JSON form only."""
    ref, path = policy_json["root"], []
    while ref in policy_json["nodes"]:
        node = policy_json["nodes"][ref]
        hit = any(all(o[k] == v for k, v in node["if_exists"].items()) for o in objects)
        path.append((ref, hit))
        ref = node["yes"] if hit else node["no"]
    return path, ref


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("clevr") / "data"
    build_clevr(ClevrConfig(**SMALL), out, progress=False)
    return out


def all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert set(manifest["settings"]) == {"M-d2", "M-d4"}
    for setting in ("M-d2", "M-d4"):
        d = built / setting
        counts = {s: len(read_jsonl(d / f"{s}.jsonl")) for s in SPLITS}
        assert counts == {"train": 18, "train_cot": 5, "test": 9, "override_test": 9, "general_test": 4}
        m = json.loads((d / "manifest.json").read_text())
        assert m["counts"] == counts and len(m["policies"]) == 3
        assert set(m["files"]) >= {f"{s}.jsonl" for s in SPLITS}
    assert manifest["settings"]["M-d4"]["leaf_statistics"]["leaves_min"] == 16


def test_every_answer_rederived_from_saved_tree_json(built):
    for setting in ("M-d2", "M-d4"):
        d = built / setting
        for split in ("train", "train_cot", "test", "override_test"):
            for r in read_jsonl(d / f"{split}.jsonl"):
                policy = json.loads((d / r["policy_path"]).read_text())
                scene = json.loads((d / r["scene"]).read_text())
                assert (d / r["images"][0]).is_file()
                path, leaf = walk(policy, scene["objects"])
                assert r["answer"] == leaf and r["response"] == f"\\boxed{{{leaf}}}"
                assert policy["name"] == r["policy"] and r["policy"] in r["query"]
                if split == "train_cot":
                    assert cited_conditions(r["reasoning"]) == path
                    assert r["reasoning"].rstrip().endswith(f"{leaf}.")


def test_compact_traces_cite_the_same_path_without_objects(tmp_path, built):
    out = tmp_path / "compact"
    build_clevr(ClevrConfig(**{**SMALL, "depths": [2], "trace": "compact"}), out, progress=False)
    full, compact = read_jsonl(built / "M-d2" / "train_cot.jsonl"), read_jsonl(out / "M-d2" / "train_cot.jsonl")
    for a, b in zip(full, compact, strict=True):
        assert "The image shows" in a["reasoning"] and "The image shows" not in b["reasoning"]
        assert cited_conditions(a["reasoning"]) == cited_conditions(b["reasoning"]) and a["answer"] == b["answer"]
        assert len(b["reasoning"]) < len(a["reasoning"]) and "Yes, the" not in b["reasoning"]


def test_override_keeps_names_changes_trees(built):
    d = built / "M-d4"
    for p in sorted((d / "policies").glob("*.json")):
        original, override = json.loads(p.read_text()), json.loads((d / "override_policies" / p.name).read_text())
        assert original["name"] == override["name"] and original["nodes"] != override["nodes"]
    tests, overrides = read_jsonl(d / "test.jsonl"), read_jsonl(d / "override_test.jsonl")
    assert [(t["images"], t["policy"]) for t in tests] == [(o["images"], o["policy"]) for o in overrides]
    assert all(o["policy_path"].startswith("override_policies/") for o in overrides)


def test_policy_images_exist_and_match_markers(built):
    for p in (built / "M-d4" / "policies").glob("*.json"):
        policy = json.loads(p.read_text())
        assert policy["text"].count("<image>") == len(policy["images"])
        for rel in policy["images"]:
            assert (p.parent / rel).is_file()


def test_test_images_unseen_in_training(built):
    d = built / "M-d2"
    train_images = {r["images"][0] for r in read_jsonl(d / "train.jsonl")}
    test_images = {r["images"][0] for r in read_jsonl(d / "test.jsonl")}
    assert not train_images & test_images and len(test_images) == 9


def test_general_questions_answered_from_scene(built):
    d = built / "M-d2"
    for r in read_jsonl(d / "general_test.jsonl"):
        objects = json.loads((d / r["scene"]).read_text())["objects"]
        assert r["policy"] is None and r["task"] == "general"
        if r["meta"]["kind"] == "count":
            assert 0 <= int(r["answer"]) <= len(objects)


def test_same_seed_same_bytes_other_seed_differs(built, tmp_path):
    again = tmp_path / "again"
    build_clevr(ClevrConfig(**SMALL), again, progress=False)
    assert all_bytes(again) == all_bytes(built)
    other = tmp_path / "other"
    build_clevr(ClevrConfig(**{**SMALL, "seed": 1, "depths": [2]}), other, progress=False)
    assert (other / "M-d2" / "test.jsonl").read_bytes() != (built / "M-d2" / "test.jsonl").read_bytes()


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_mod, "build_setting", boom)
    out = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        build_clevr(ClevrConfig(**{**SMALL, "depths": [2], "train_per_policy": 2, "test": 4}), out, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(built):
    with pytest.raises(TrimpiError, match="--overwrite"):
        build_clevr(ClevrConfig(**SMALL), built, progress=False)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="^depths"):
        ClevrConfig.checked(depths=[3])
    with pytest.raises(ConfigError, match="^variant"):
        ClevrConfig.checked(variant="X")


def make_release(tmp_path: Path, built: Path) -> Path:
    """A CLEVR-v1.0-shaped directory made from our own pool."""
    rel = tmp_path / "CLEVR_v1.0"
    for ours, theirs in (("train", "train"), ("test", "val")):
        scenes = json.loads((built / "pool" / f"CLEVR_{ours}_scenes.json").read_text())["scenes"]
        (rel / "images" / theirs).mkdir(parents=True)
        for s in scenes:
            (rel / "images" / theirs / s["image_filename"]).write_bytes(
                (built / "pool" / "images" / s["image_filename"]).read_bytes())
        (rel / "scenes").mkdir(exist_ok=True)
        (rel / "scenes" / f"CLEVR_{theirs}_scenes.json").write_text(json.dumps({"info": {}, "scenes": scenes}))
    return rel


def test_clevr_release_input(built, tmp_path):
    rel = make_release(tmp_path, built)
    out = tmp_path / "from_release"
    cfg = ClevrConfig(**{**SMALL, "depths": [2], "clevr_dir": str(rel)})
    build_clevr(cfg, out, progress=False)
    d = out / "M-d2"
    for r in read_jsonl(d / "test.jsonl"):
        scene = json.loads((d / r["scene"]).read_text())
        assert walk(json.loads((d / r["policy_path"]).read_text()), scene["objects"])[1] == r["answer"]
        assert (d / r["images"][0]).read_bytes() == (rel / "images" / "val" / scene["source"]).read_bytes()


def test_clevr_release_errors_are_one_line(built, tmp_path):
    rel = make_release(tmp_path, built)
    cfg = ClevrConfig(**{**SMALL, "depths": [2], "clevr_dir": str(rel)})
    (rel / "scenes" / "CLEVR_val_scenes.json").write_text("{not json")
    with pytest.raises(DataError, match="CLEVR_val_scenes.json: malformed JSON"):
        build_clevr(cfg, tmp_path / "a", progress=False)
    scenes = json.loads((built / "pool" / "CLEVR_test_scenes.json").read_text())["scenes"]
    scenes[0]["objects"][0]["color"] = "pink"
    (rel / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": scenes}))
    with pytest.raises(DataError, match=r"objects\[0\]\.color must be one of"):
        build_clevr(cfg, tmp_path / "b", progress=False)
    (rel / "images" / "train" / scenes[0]["image_filename"].replace("test", "train")).unlink()
    with pytest.raises(DataError, match="not found"):
        build_clevr(ClevrConfig(**{**cfg.model_dump(), "test": 4, "general": 0}), tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="not a directory"):
        build_clevr(ClevrConfig(**{**cfg.model_dump(), "clevr_dir": str(tmp_path / "nope")}), tmp_path / "d")
    assert not any(p.name.startswith(("a", "b", "c", "d")) for p in tmp_path.iterdir() if p.is_dir())


def test_preview_contact_sheet(built, tmp_path):
    out = write_preview(built, tmp_path / "preview.png", n=6)
    with Image.open(out) as im:
        assert im.size == (4 * 240, 2 * (180 + 58))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "trimpi", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--depth", "3"], "--depth:"),
        (["--variant", "Q"], "--variant:"),
        (["--image-size", "big"], "--image-size"),
        (["--clevr-dir", "/nonexistent/CLEVR"], "not a directory"),
    ],
)
def test_cli_bad_input_one_line_error(tmp_path, args, expected):
    res = run_cli("data", "clevr", "--out", str(tmp_path / "x"), *args)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in res.stderr


def test_cli_existing_output_without_overwrite(built):
    res = run_cli("data", "clevr", "--out", str(built), "--train-per-policy", "2", "--test", "2", "--cot", "1",
                  "--general", "1", "--policies", "1")
    assert res.returncode == 2 and "--overwrite" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_unwritable_output_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_cli("data", "clevr", "--out", str(blocker / "data"))
    assert res.returncode == 2 and "is not a directory" in res.stderr and "Traceback" not in res.stderr
