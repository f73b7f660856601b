"""Content-addressed steps: hashes, done markers, skipping and clean restarts (no model involved)."""

from __future__ import annotations

import pytest

from trimpi.pipeline import execute, make_plan, parse_recipe
from trimpi.pipeline.execute import Context
from trimpi.pipeline.runner import run_step
from trimpi.pipeline.steps import DONE, Step, content_hash, mark_done, read_done, status

RECIPE = {"name": "t", "model": "tiny:qwen2_5_vl",
          "methods": ["cot_sft", "cot_sft_grpo", "trimpi_grpo", "trimpi_dapo"],
          "data": {"clevr": {"depths": [2], "policies": 2, "train_per_policy": 4, "test": 4, "cot": 2, "general": 2}}}


def test_content_hash_is_canonical_and_sensitive():
    h = content_hash("sft", {"a": 1, "b": [1, 2]}, ["x"])
    assert h == content_hash("sft", {"b": [1, 2], "a": 1}, ["x"]) and len(h) == 12
    assert h != content_hash("cpt", {"a": 1, "b": [1, 2]}, ["x"])
    assert h != content_hash("sft", {"a": 2, "b": [1, 2]}, ["x"])
    assert h != content_hash("sft", {"a": 1, "b": [1, 2]}, ["y"])


def test_a_changed_stage_changes_itself_and_everything_downstream_only():
    a = make_plan(parse_recipe(RECIPE))
    b = make_plan(parse_recipe({**RECIPE, "stages": {"sft": {"lr": 0.5}}}))
    ids_a, ids_b = {s.id for s in a.steps}, {s.id for s in b.steps}
    same = {s.split("-")[0] for s in ids_a & ids_b}
    assert same == {"data", "base", "cpt"}
    assert a.models["trimpi_grpo"].inputs[0].inputs[0].id == b.models["trimpi_grpo"].inputs[0].inputs[0].id


def test_seed_changes_every_step():
    a = make_plan(parse_recipe(RECIPE))
    b = make_plan(parse_recipe({**RECIPE, "seed": 1}))
    assert not ({s.id for s in a.steps} & {s.id for s in b.steps})


def test_methods_share_steps():
    plan = make_plan(parse_recipe(RECIPE))
    by_kind = {}
    for s in plan.steps:
        by_kind.setdefault(s.kind, []).append(s)
    assert len(by_kind["sft"]) == 2 and len(by_kind["cpt"]) == 1 and len(by_kind["rl"]) == 3
    shared = plan.models["cot_sft_grpo"].inputs[0]
    assert shared is plan.models["cot_sft"] and set(shared.methods) == {"cot_sft", "cot_sft_grpo"}
    assert set(by_kind["cpt"][0].methods) == {"trimpi_grpo", "trimpi_dapo"}
    assert set(by_kind["data"][0].methods) == set(RECIPE["methods"])


def test_done_marker_and_status(tmp_path):
    step = Step("eval", {"x": 1})
    assert status(step, tmp_path) == "todo"
    step.dir(tmp_path).mkdir(parents=True)
    assert status(step, tmp_path) == "partial"
    mark_done(step, tmp_path, {"score": 0.5}, 1.23456)
    assert status(step, tmp_path) == "done"
    done = read_done(step, tmp_path)
    assert done["result"] == {"score": 0.5} and done["seconds"] == 1.235 and done["id"] == step.id


@pytest.fixture
def fake_executors(monkeypatch):
    calls = []

    def fake(step, ctx):
        calls.append((step.id, sorted(p.name for p in step.dir(ctx.out).iterdir())))
        return {"ok": True}

    monkeypatch.setitem(execute.EXECUTORS, "eval", fake)
    monkeypatch.setitem(execute.EXECUTORS, "sft", fake)
    return calls


def test_run_step_skips_done_clears_partial_and_keeps_resumable(tmp_path, fake_executors):
    ctx = Context(out=tmp_path)
    ev, sft = Step("eval", {"k": 1}), Step("sft", {"k": 1})
    for s in (ev, sft):
        s.dir(tmp_path).mkdir(parents=True)
        (s.dir(tmp_path) / "leftover").write_text("partial work")
    lines = []
    run_step(ev, ctx, lines.append)
    run_step(sft, ctx, lines.append)
    assert fake_executors == [(ev.id, []), (sft.id, ["leftover"])]
    assert lines[0].startswith("run") and lines[1].startswith("resume")
    assert (ev.dir(tmp_path) / DONE).is_file()
    run_step(ev, ctx, lines.append)
    assert len(fake_executors) == 2 and lines[-1].startswith("skip")


def test_failed_step_leaves_no_done_marker(tmp_path, monkeypatch):
    def boom(step, ctx):
        raise RuntimeError("killed")

    monkeypatch.setitem(execute.EXECUTORS, "eval", boom)
    step = Step("eval", {"k": 2})
    with pytest.raises(RuntimeError):
        run_step(step, Context(out=tmp_path), lambda s: None)
    assert status(step, tmp_path) == "partial"


def test_only_runs_a_subset_but_reports_every_method(tmp_path, monkeypatch):
    from trimpi.pipeline import run_recipe
    from trimpi.report import write_report

    ran = []

    def fake(step, ctx):
        ran.append(step.kind)
        return {"protocols": {"accuracy": {"score": 0.5}}} if step.kind == "eval" else {}

    for kind in execute.EXECUTORS:
        monkeypatch.setitem(execute.EXECUTORS, kind, fake)
    record = run_recipe(parse_recipe(RECIPE), tmp_path, only=["cot_sft"], echo=lambda s: None,
                        after=write_report)
    assert ran == ["data", "base", "sft", "eval"]
    assert set(record["methods"]) == set(RECIPE["methods"])
    md = (tmp_path / "report.md").read_text()
    assert "| CoT SFT | without the policy | 50.0 | 50.0 |" in md and "| TriMPI (PoRo-DAPO) | - | - | - |" in md


def test_done_marker_turns_non_finite_numbers_into_null(tmp_path):
    step = Step("rl", {"k": 3})
    step.dir(tmp_path).mkdir(parents=True)
    mark_done(step, tmp_path, {"reward": float("nan"), "rows": [1.0, float("inf")]}, 0.0)
    assert read_done(step, tmp_path)["result"] == {"reward": None, "rows": [1.0, None]}


def test_demo_writes_the_report_and_prints_the_table_with_reference_lines(tmp_path, monkeypatch):
    """`trimpi demo` (every step faked): the results table ends with chance and the per-policy majority,
    the in-context method is a row of it, and the report's accuracy plot is written."""
    import typer
    from typer.testing import CliRunner

    from _fixtures_train import write_dataset
    from trimpi.cli.demo import demo

    data = write_dataset(tmp_path / "data", n=6)

    def fake(step, ctx):
        if step.kind == "data":
            return {"dataset": str(data)}
        if step.kind == "eval":
            name = "in_context" if "in_context" in step.config["protocols"] else "accuracy"
            return {"protocols": {name: {"score": 0.75}}}
        return {}

    for kind in execute.EXECUTORS:
        monkeypatch.setitem(execute.EXECUTORS, kind, fake)
    app = typer.Typer()
    app.command()(demo)
    result = CliRunner().invoke(app, ["--out", str(tmp_path / "demo"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "| In-context | with the policy in the prompt | 75.0 |" in result.output
    assert "| *chance (a random answer of the policy)* | reference | 50.0 [9.5–90.5], n=2 |" in result.output
    assert "| *always the policy's most frequent answer* | reference |" in result.output
    assert (tmp_path / "demo" / "report.md").is_file() and (tmp_path / "demo" / "accuracy.png").is_file()


@pytest.mark.parametrize("progress", [True, False])
def test_rl_step_shows_train_rls_progress_bar_when_the_run_does(tmp_path, monkeypatch, progress):
    from types import SimpleNamespace

    from _fixtures_train import write_dataset
    from trimpi.models import loading
    from trimpi.train.rl import trainer

    seen = {}
    monkeypatch.setattr(trainer, "make_accelerator", lambda: SimpleNamespace(device="cpu"))
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(trainer, "train_rl", lambda *a, **k: seen.update(k) or {"step": 1, "reward": 0.5})
    data = Step("data", {"source": "path", "path": str(write_dataset(tmp_path / "d", n=2))})
    step = Step("rl", {"algo": "grpo", "policy_rollout": True, "options": {}, "seed": 0},
                [Step("base", {"model": "some/model"}), data])
    step.dir(tmp_path).mkdir(parents=True)
    result = execute.run_rl_step(step, Context(out=tmp_path, progress=progress))
    assert seen["progress"] is progress and result["steps"] == 1
