"""`trimpi data cot --template`: rule-citing traces from the policy and the gold answer, written where recipes
look (train_cot.jsonl) and labelled in the manifest; and the LLM teacher's measured estimate before it starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from trimpi.cli import app
from trimpi.data.imports import import_dataset
from trimpi.data.io import read_json, sha256_file, write_jsonl
from trimpi.data.schema import load_records
from trimpi.data.teacher import TeacherOptions, generate_traces
from trimpi.data.teacher_template import policy_blocks, template_traces, trace
from trimpi.errors import DataError
from trimpi.pipeline import load_recipe, run_recipe
from trimpi.pipeline.starter import write_starter

from test_import_user_path import opts, write_source


@pytest.fixture
def dataset(tmp_path):
    out = tmp_path / "data"
    write_starter(out, import_dataset(opts(write_source(tmp_path / "src")), out))
    return out


def test_a_trace_quotes_the_rule_that_names_the_answer():
    blocks = policy_blocks("# P\n\n1. If red, the action is STOP.\n2. If green, the action is SHIP.\n"
                           "3. Otherwise, HOLD.\n\n**R9 Late.** Anything late gets HOLD too.\n")
    assert trace("P", blocks, "STOP") == ('Policy P, rule 1: "If red, the action is STOP." That rule gives STOP.',
                                         "one")
    text, how = trace("P", blocks, "HOLD")
    assert how == "several" and 'rule 3: "Otherwise, HOLD."' in text and 'R9: "Anything late gets HOLD too."' in text
    assert trace("P", blocks, "ESCALATE")[1] == "none"


def test_template_traces_go_where_recipes_look_and_are_labelled(dataset):
    summary = template_traces(dataset)
    rows = load_records(dataset / "train_cot.jsonl")
    assert len(rows) == len(load_records(dataset / "train.jsonl")) == summary["records"]
    stop = next(r for r in rows if r.answer == "STOP")
    assert stop.reasoning == 'Policy Dock-Inspect, rule 1: "If the crate is red, the action is STOP." That rule gives STOP.'
    assert stop.meta["teacher"] == {"model": "template", "mode": "template", "cites": "one"}
    manifest = read_json(dataset / "manifest.json")
    assert manifest["traces"]["train_cot.jsonl"]["source"] == "template"
    assert manifest["counts"]["train_cot"] == len(rows)
    assert manifest["files"]["train_cot.jsonl"] == sha256_file(dataset / "train_cot.jsonl")
    lines: list[str] = []  # with traces, the imported recipe runs CoT SFT and TriMPI as written, with no note
    record = run_recipe(load_recipe(dataset / "recipe.yaml"), dataset.parent / "run", dry_run=True, echo=lines.append)
    assert not [ln for ln in lines if ln.startswith("note:")]
    assert list(record["methods"]) == ["in_context", "direct_sft", "cot_sft", "trimpi_grpo"]


def test_template_traces_do_not_replace_a_teachers(dataset):
    rows = [{**r.to_dict(), "split": "train_cot", "reasoning": "a teacher's reasoning"}
            for r in load_records(dataset / "train.jsonl")]
    write_jsonl(dataset / "train_cot.jsonl", rows)
    with pytest.raises(DataError, match="not template traces .*--overwrite"):
        template_traces(dataset)
    assert template_traces(dataset, overwrite=True)["records"] == len(rows)


def test_the_cot_command_needs_a_teacher_or_template(dataset):
    runner = CliRunner()
    bad = runner.invoke(app, ["data", "cot", "--data", str(dataset)])
    assert bad.exit_code != 0 and "--template" in bad.output
    ok = runner.invoke(app, ["data", "cot", "--data", str(dataset), "--template"])
    assert ok.exit_code == 0, ok.output
    assert "template traces to" in ok.output and (dataset / "train_cot.jsonl").is_file()


class EchoClient:
    """Answers every prompt with a trace ending at the record's gold answer."""

    name = "echo"

    def __init__(self):
        self.calls = 0

    def complete(self, conversations, max_tokens=512, temperature=0.0):
        self.calls += len(conversations)
        return ["<think>Rule 3 applies here.</think>\\boxed{HOLD}" for _ in conversations]


def test_the_teacher_prints_a_measured_time_per_record_before_it_starts(dataset):
    lines: list[str] = []
    client = EchoClient()
    opts = TeacherOptions(limit=5, progress=False, batch_size=5)
    generate_traces(client, dataset, dataset / "t.jsonl", opts, echo=lines.append)
    assert len(lines) == 1 and lines[0].startswith("teacher: ") and "s per record (one call, measured); 5 records" in lines[0]
    quiet = EchoClient()
    generate_traces(quiet, dataset, dataset / "u.jsonl", TeacherOptions(limit=5, progress=False, batch_size=5))
    assert quiet.calls == client.calls - 1
