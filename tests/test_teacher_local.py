"""Teacher traces from a local tiny random model through LocalClient: runs end to end, rejects its noise."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from test_eval_fixtures import tiny_for
from trimpi.cli.cot import cot
from trimpi.data.io import read_json
from trimpi.data.schema import load_records
from trimpi.data.teacher import TeacherOptions, generate_traces, progress_path
from trimpi.generation.client import LocalClient


def check_counts(summary: dict, out: Path, n: int, k: int) -> None:
    """Every record attempted; a rejected record used all k attempts; the file holds the kept ones."""
    rows = progress_path(out).read_text().splitlines()[1:]
    assert summary["attempted"] == n == len(rows)
    assert summary["kept"] <= 1  # random weights: (almost) every trace is rejected
    rejected = n - summary["kept"]
    assert rejected * k <= summary["teacher_calls"] <= rejected * k + summary["kept"] * k
    assert sum(summary["rejections"].values()) == summary["teacher_calls"] - summary["kept"]
    assert len(load_records(out)) == summary["kept"]


def test_local_tiny_model_sampling(dataset, tmp_path):
    model, processor = tiny_for(dataset)
    client = LocalClient(model, processor, name="tiny", batch_size=4)
    out = tmp_path / "local.jsonl"
    summary = generate_traces(client, dataset, out, TeacherOptions(
        limit=4, samples_per_example=2, batch_size=4, max_new_tokens=12, temperature=1.0, progress=False))
    check_counts(summary, out, n=4, k=2)
    assert summary["teacher"] == "tiny" and set(summary["rejections"]) <= {"no_think", "bad_think",
                                                                           "empty_reasoning", "wrong_answer"}


def test_cli_local_preset_greedy(dataset, tmp_path):
    cli = typer.Typer()
    cli.command()(cot)
    cli.command("other")(lambda: None)
    out = tmp_path / "micro.jsonl"
    result = CliRunner().invoke(cli, [
        "cot", "--data", str(dataset), "--teacher", "micro", "--mode", "reverse", "--out", str(out), "--limit", "3",
        "--samples-per-example", "1", "--temperature", "0", "--max-new-tokens", "8", "--device", "cpu",
        "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = read_json(out.with_name("micro.summary.json"))
    check_counts(summary, out, n=3, k=1)
    assert summary["mode"] == "reverse" and f"kept {summary['kept']} / 3 records" in result.output
