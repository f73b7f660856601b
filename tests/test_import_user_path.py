"""The user's path: a CSV + a Markdown policy + a folder of photos → `trimpi data import` (which catches the
mistakes a user makes and writes a ready recipe) → `trimpi run OUT/recipe.yaml`, with no reasoning traces
and no scene graphs (issue 28)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from trimpi.cli import app
from trimpi.data.imports import ImportOptions, import_dataset
from trimpi.data.io import read_json
from trimpi.data.schema import load_records
from trimpi.errors import DataError
from trimpi.pipeline import load_recipe, run_recipe
from trimpi.pipeline.starter import write_starter

ACTIONS = {"red": "STOP", "green": "SHIP", "blue": "HOLD", "gray": "HOLD", "white": "ESCALATE"}
POLICY = """# Dock-Inspect

Inspect each crate photo.

1. If the crate is red, the action is STOP.
2. If the crate is green, the action is SHIP.
3. If the crate is blue or gray, the action is HOLD.
4. When the crate is white, the action is ESCALATE.

Answer with the action word only.
"""
CHOICE = '{"type": "choice", "options": ["STOP", "SHIP", "HOLD", "ESCALATE"]}'
MAP = ["--column", "query=question", "--column", "answer=decision", "--column", "images=photo"]


def colors(n: int) -> list[str]:
    """Imbalanced like real data: mostly HOLD, few ESCALATE."""
    cycle = ["blue", "gray", "blue", "gray", "red", "blue", "green", "gray", "red", "white"]
    return [cycle[i % len(cycle)] for i in range(n)]


def write_source(root: Path, n: int = 100, header=("question", "photo", "decision"), split=None) -> Path:
    (root / "photos").mkdir(parents=True, exist_ok=True)
    for c in ACTIONS:
        Image.new("RGB", (24, 16), c).save(root / "photos" / f"{c}.png")
    with (root / "data.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(header) + (["split"] if split else []))
        for i, c in enumerate(colors(n)):
            w.writerow([f"Crate {i}: what should the dock do?", f"photos/{c}.png", ACTIONS[c]]
                       + ([split(i, c)] if split else []))
    (root / "policy.md").write_text(POLICY)
    return root


def opts(root: Path, **kw) -> ImportOptions:
    base = {"examples": [root / "data.csv"], "policies": [str(root / "policy.md")], "answer_type": CHOICE,
            "columns": {"query": "question", "answer": "decision", "images": "photo"}}
    return ImportOptions(**{**base, **kw})


def test_an_unmapped_column_of_image_files_is_an_error_naming_the_column_fix(tmp_path):
    src = write_source(tmp_path)
    with pytest.raises(DataError, match=r"data.csv: row 1: column 'photo' holds image files .* --column images=photo"):
        import_dataset(opts(src, columns={"query": "question", "answer": "decision"}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_misspelled_header_is_blamed_on_the_header_and_lists_the_files_columns(tmp_path):
    src = write_source(tmp_path, header=("qeury", "photo", "decision"))
    with pytest.raises(DataError) as e:
        import_dataset(opts(src, columns={"answer": "decision", "images": "photo"}), tmp_path / "out")
    msg = str(e.value)
    assert "row 1" not in msg and "header: no column 'query'" in msg
    assert "did you mean 'qeury'" in msg and "--column query=qeury" in msg
    assert "columns are qeury, photo, decision" in msg


def test_a_choice_answer_outside_its_options_is_rejected_with_its_row(tmp_path):
    src = write_source(tmp_path)
    narrow = '{"type": "choice", "options": ["STOP", "SHIP", "HOLD"]}'
    with pytest.raises(DataError, match=r"data.csv: row 10: field 'answer': 'ESCALATE' is not one of the options"):
        import_dataset(opts(src, answer_type=narrow), tmp_path / "out")


def test_the_split_is_stratified_by_answer(tmp_path):
    src = write_source(tmp_path, n=100)  # HOLD 50, STOP 20, SHIP 10, ESCALATE 10 (+ HOLD gray...)
    out = tmp_path / "out"
    import_dataset(opts(src), out)
    test = [r.answer for r in load_records(out / "test.jsonl")]
    train = [r.answer for r in load_records(out / "train.jsonl")]
    assert len(test) == 20
    for answer in set(train):  # every answer tested, in proportion (largest remainder)
        share = (test.count(answer) + train.count(answer)) * 0.2
        assert abs(test.count(answer) - share) < 1, answer


def test_a_small_test_split_missing_answers_is_a_warning_with_the_numbers(tmp_path):
    src = write_source(tmp_path, n=100, split=lambda i, c: "test" if c in ("blue", "gray") and i < 14 else "train")
    manifest = import_dataset(opts(src), tmp_path / "out")
    text = " ".join(manifest["warnings"])
    assert "the test split has 10 records (train 90): under 30" in text
    assert "no record answered 'ESCALATE' (train 10), 'SHIP' (train 10), 'STOP' (train 20)" in text


def test_the_policy_is_named_by_its_first_heading_unless_name_is_given(tmp_path):
    src = write_source(tmp_path)
    assert import_dataset(opts(src), tmp_path / "a")["policies"] == ["Dock-Inspect"]
    assert import_dataset(opts(src, name="dock"), tmp_path / "b")["policies"] == ["dock"]


def test_the_answer_format_is_recorded_and_a_bare_answer_sentence_is_flagged(tmp_path):
    manifest = import_dataset(opts(write_source(tmp_path)), tmp_path / "out")
    assert manifest["answer_format"]["extraction"] == "boxed"
    assert manifest["answer_format"]["written"] == "\\boxed{ANSWER}"
    flagged = [w for w in manifest["warnings"] if "Answer with the action word only." in w]
    assert len(flagged) == 1 and "\\boxed{ANSWER}" in flagged[0]


def test_import_prints_the_next_command_and_its_recipe_runs_without_traces_or_scene_graphs(tmp_path, monkeypatch):
    src = write_source(tmp_path)
    monkeypatch.chdir(src)
    out = tmp_path / "data"
    result = CliRunner().invoke(app, ["data", "import", "--out", str(out), "--policy", "policy.md", "--examples",
                                      "data.csv", "--answer-type", CHOICE, *MAP])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"next: trimpi run {out / 'recipe.yaml'}"
    assert "answers: the model is trained to write \\boxed{ANSWER}" in result.output
    recipe = load_recipe(out / "recipe.yaml")
    assert recipe.warmup is None and recipe.data.path == str(out.resolve())
    assert {"accuracy", "in_context", "efficiency"} <= set(recipe.eval["protocols"])
    assert "override" not in recipe.eval["protocols"] and "forgetting" not in recipe.eval["protocols"]
    assert "random weights" in (out / "recipe.yaml").read_text()
    lines: list[str] = []
    record = run_recipe(recipe, tmp_path / "run", dry_run=True, echo=lines.append)
    notes = [ln for ln in lines if ln.startswith("note:")]
    assert len(notes) == 1 and "no reasoning traces: CoT SFT, TriMPI (PoRo-GRPO) need them" in notes[0]
    assert "--template" in notes[0] and "--teacher" in notes[0]
    assert list(record["methods"]) == ["in_context", "direct_sft", "trimpi_grpo_answers"]
    kinds = {s["kind"]: s for s in record["steps"]}
    assert "warmup" not in kinds and kinds["cpt"]["config"]["target"] == "answer"
    assert record["notes"] == notes


def test_a_recipe_warm_up_on_data_without_scene_graphs_is_left_out_with_a_note(tmp_path):
    src = write_source(tmp_path)
    out = tmp_path / "data"
    write_starter(out, import_dataset(opts(src), out))
    values = yaml.safe_load((out / "recipe.yaml").read_text())
    values.update(warmup={"vision_steps": 10}, methods=["direct_sft"])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(values))
    lines: list[str] = []
    record = run_recipe(load_recipe(path), tmp_path / "run", dry_run=True, echo=lines.append)
    assert any("no perception warm-up" in ln and "no scene graphs" in ln for ln in lines)
    assert "warmup" not in {s["kind"] for s in record["steps"]}


def test_a_trace_method_without_an_answer_only_counterpart_names_both_ways_to_get_traces(tmp_path):
    from trimpi.errors import ConfigError

    src = write_source(tmp_path)
    out = tmp_path / "data"
    write_starter(out, import_dataset(opts(src), out))
    values = yaml.safe_load((out / "recipe.yaml").read_text())
    values["methods"] = ["cot_sft_grpo"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=r"train_cot.jsonl: file not found \(get traces with .*--template.*--teacher"):
        run_recipe(load_recipe(path), tmp_path / "run", dry_run=True, echo=lambda s: None)


def test_the_manifest_counts_scene_graphs(tmp_path):
    manifest = import_dataset(opts(write_source(tmp_path)), tmp_path / "out")
    assert manifest["scenes"] == 0 and read_json(tmp_path / "out" / "manifest.json")["scenes"] == 0


def test_the_dock_inspect_example_goes_through_the_two_command_path(tmp_path, monkeypatch):
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("dock_generate", root / "examples/dock_inspect/generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    counts = gen.generate(tmp_path / "source", rows=24)
    assert sum(counts.values()) == 24 and set(counts) <= {"SHIP", "HOLD", "INSPECT", "REJECT"}
    out = tmp_path / "data"
    result = CliRunner().invoke(app, [
        "data", "import", "--out", str(out), "--policy", str(root / "examples/dock_inspect/policy.md"),
        "--examples", str(tmp_path / "source/inspections.csv"), "--column", "query=note", "--column", "images=photo",
        "--column", "answer=action", "--column", "id=crate",
        "--answer-type", '{"type": "choice", "options": ["SHIP", "HOLD", "INSPECT", "REJECT"]}'])
    assert result.exit_code == 0, result.output
    assert "warning: policy.md" not in result.output  # the example's policy asks for \boxed{ACTION} itself
    recipe = load_recipe(out / "recipe.yaml")
    assert recipe.name == "Dock-Inspect" and recipe.model == "micro"
