"""Evaluation protocols on a tiny ClevrPolicy set: numbers checked against the test's own recomputation."""

from __future__ import annotations

import json
import shutil

import pytest
import typer
from PIL import Image
from test_eval_fixtures import ScriptedEngine, by_image, last_boxed, read_rows, tiny_for
from typer.testing import CliRunner

from trimpi.cli.eval import evaluate
from trimpi.data.schema import load_policy, load_records, render_messages
from trimpi.errors import ConfigError, DataError
from trimpi.eval import EvalOptions, Subject, add_forgetting_baseline, evaluate_model, run_eval

GENERATING = ("accuracy", "in_context", "override", "policy_in_context", "forgetting")
SPLIT = {"accuracy": "test", "in_context": "test", "override": "override_test", "policy_in_context": "test",
         "forgetting": "general_test"}


@pytest.fixture(scope="module")
def tiny(dataset):
    return tiny_for(dataset)


@pytest.fixture(scope="module")
def ckpt(tiny, tmp_path_factory):
    from trimpi.models.loading import save_checkpoint

    return save_checkpoint(*tiny, tmp_path_factory.mktemp("eval_ckpt") / "model")


def cli(*args: str):
    app = typer.Typer()
    app.command()(evaluate)
    app.command("noop")(lambda: None)  # two commands: the app keeps the "evaluate" sub-command name
    return CliRunner().invoke(app, ["evaluate", *args])


def own_correct(row: dict) -> bool:
    """The test's own comparison: final boxed answer vs gold (exact for clevr, case-insensitive otherwise)."""
    pred = last_boxed(row["completion"])
    if pred is None:
        return False
    if row["task"] == "clevr":
        return pred.strip() == row["gold"]
    return pred.strip().rstrip(".").strip().lower() == row["gold"].lower()


def token_count(processor, dataset, record, with_policy: bool) -> int:
    """Prompt length straight from the chat template and the processor."""
    policy = load_policy(dataset / record.policy_path) if with_policy else None
    msgs = render_messages(record, dataset, policy=policy, placement="system")
    text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    images = [Image.open(b["path"]).convert("RGB") for m in msgs for b in m["content"] if b["type"] == "image"]
    return processor(text=[text], images=[images], return_tensors="pt")["input_ids"].shape[1]


def test_cli_every_protocol_on_a_tiny_model(ckpt, dataset, tiny, tmp_path):
    out = tmp_path / "out"
    res = cli("--model", str(ckpt), "--data", str(dataset), "--protocols", "all", "--out", str(out), "--max-new-tokens",
              "6", "--batch-size", "4", "--efficiency-samples", "2", "--efficiency-repeats", "2", "--no-progress")
    assert res.exit_code == 0, res.output + repr(res.exception)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["dataset"] == "T-d2" and scores["options"]["max_new_tokens"] == 6
    results = scores["protocols"]
    for name in GENERATING:
        rows = read_rows(out / f"predictions_{name}.jsonl")
        records = load_records(dataset / f"{SPLIT[name]}.jsonl")
        assert [r["id"] for r in rows] == [r.id for r in records]
        assert all(r["policy_in_prompt"] == (name in ("in_context", "override", "policy_in_context")) for r in rows)
        expected = sum(own_correct(r) for r in rows) / len(rows)
        assert results[name]["accuracy"] == pytest.approx(expected)
        assert results[name]["n"] == len(records)
        assert all(r["completion_tokens"] <= 6 for r in rows)
    same = [r["completion"] for r in read_rows(out / "predictions_in_context.jsonl")]
    assert same == [r["completion"] for r in read_rows(out / "predictions_policy_in_context.jsonl")]
    plain = [r["completion"] for r in read_rows(out / "predictions_accuracy.jsonl")]
    assert plain == [r["completion"] for r in read_rows(out / "predictions_referral.jsonl")]

    ref = read_rows(out / "predictions_referral.jsonl")
    assert results["referral"]["exact"] == pytest.approx(sum(r["exact"] for r in ref) / len(ref))

    _, processor = tiny
    eff_rows = read_rows(out / "predictions_efficiency.jsonl")
    records = load_records(dataset / "test.jsonl")
    for row, rec in zip(eff_rows, records, strict=True):
        assert row["tokens_with_policy"] == token_count(processor, dataset, rec, True)
        assert row["tokens_without_policy"] == token_count(processor, dataset, rec, False)
    eff = results["efficiency"]
    mean_with = sum(r["tokens_with_policy"] for r in eff_rows) / len(eff_rows)
    mean_without = sum(r["tokens_without_policy"] for r in eff_rows) / len(eff_rows)
    assert eff["tokens_with_policy"] == pytest.approx(mean_with)
    assert eff["token_savings_pct"] == pytest.approx(100 * (1 - mean_without / mean_with))
    assert eff["prefill_n"] == 2 and sum("prefill_s_with_policy" in r for r in eff_rows) == 2
    timed = eff_rows[:2]
    pw = sum(r["prefill_s_with_policy"] for r in timed) / 2
    po = sum(r["prefill_s_without_policy"] for r in timed) / 2
    assert pw > 0 and po > 0
    assert eff["prefill_savings_pct"] == pytest.approx(100 * (1 - po / pw))
    assert "accuracy" in res.output and "token_savings_pct" in res.output


def scripted(processor, reply) -> Subject:
    return Subject(processor=processor, engine=ScriptedEngine(reply), model=None, name="scripted")


def test_accuracy_override_and_forgetting_with_known_answers(dataset, tiny, tmp_path):
    _, processor = tiny
    test = load_records(dataset / "test.jsonl")
    override = load_records(dataset / "override_test.jsonl")
    general = load_records(dataset / "general_test.jsonl")
    override_texts = {load_policy(dataset / r.policy_path).text for r in override}

    plain = [(f"<think>x</think>\\boxed{{{r.answer}}}" if i % 3 == 0 else
              f"\\boxed{{{r.answer.lower()}}}" if i % 3 == 1 else r.answer) for i, r in enumerate(test)]
    new = [f"\\boxed{{{r.answer}}}" if i % 2 == 0 else "\\boxed{Case 99}" for i, r in enumerate(override)]
    gen = [f"\\boxed{{ {r.answer.upper()}. }}" if i % 2 == 0 else "\\boxed{zzz}" for i, r in enumerate(general)]
    answer_plain, answer_new = by_image(dataset, test, plain), by_image(dataset, override, new)
    answer_general = by_image(dataset, general, gen)

    def reply(prompt):
        if "Question:" in prompt.text:
            return answer_general(prompt)
        if any(t in prompt.text for t in override_texts):
            return answer_new(prompt)
        return answer_plain(prompt)

    earlier = tmp_path / "before.json"
    earlier.write_text(json.dumps({"dataset": "T-d2", "protocols": {"forgetting": {"accuracy": 0.25}}}))
    opts = EvalOptions(protocols=["accuracy", "override", "forgetting"], batch_size=4, progress=False,
                       baseline_scores=earlier)
    out = tmp_path / "out"
    res = evaluate_model(scripted(processor, reply), dataset, out, opts)["T-d2"]["protocols"]
    assert res["accuracy"]["accuracy"] == pytest.approx(sum(i % 3 == 0 for i in range(len(test))) / len(test))
    assert res["accuracy"]["format_rate"] == res["accuracy"]["accuracy"]  # only those replies have <think>
    assert res["override"]["accuracy"] == pytest.approx(sum(i % 2 == 0 for i in range(len(override))) / len(override))
    acc_general = sum(i % 2 == 0 for i in range(len(general))) / len(general)
    assert res["forgetting"]["accuracy"] == pytest.approx(acc_general)
    assert res["forgetting"]["baseline_accuracy"] == 0.25
    assert res["forgetting"]["delta"] == pytest.approx(acc_general - 0.25)

    perfect = by_image(dataset, general, [f"\\boxed{{{r.answer}}}" for r in general])
    results = {"T-d2": json.loads((out / "scores.json").read_text())}
    add_forgetting_baseline(scripted(processor, perfect), dataset, out, opts, results)
    forgetting = json.loads((out / "scores.json").read_text())["protocols"]["forgetting"]
    assert forgetting["baseline_accuracy"] == 1.0
    assert forgetting["delta"] == pytest.approx(acc_general - 1.0)
    assert len(read_rows(out / "predictions_forgetting_baseline.jsonl")) == len(general)


def test_completions_cut_at_the_token_cap_give_a_warning(dataset, tiny, tmp_path, recwarn):
    _, processor = tiny
    opts = EvalOptions(protocols=["accuracy"], batch_size=4, max_new_tokens=7, progress=False)
    cut = Subject(processor=processor, engine=ScriptedEngine(lambda p: "<think>Condition 1", truncated=True),
                  model=None, name="scripted")
    with pytest.warns(UserWarning, match=r"T-d2:accuracy: 100% of completions stopped at max_new_tokens=7"):
        res = evaluate_model(cut, dataset, tmp_path / "cut", opts)["T-d2"]["protocols"]["accuracy"]
    assert res["truncated_rate"] == 1.0
    evaluate_model(scripted(processor, lambda p: "\\boxed{Case 1}"), dataset, tmp_path / "whole", opts)
    assert not [w for w in recwarn if "max_new_tokens" in str(w.message)]


def test_policy_placement_reaches_the_prompt(dataset, tiny, tmp_path):
    _, processor = tiny
    policy_text = load_policy(dataset / load_records(dataset / "test.jsonl")[0].policy_path).text.splitlines()[0]
    prompts = {}
    for placement in ("system", "user"):
        subject = scripted(processor, lambda p: "\\boxed{Case 1}")
        opts = EvalOptions(protocols=["in_context", "accuracy"], placement=placement, limit=2, progress=False)
        evaluate_model(subject, dataset, tmp_path / placement, opts)
        seen = subject.engine.seen
        assert len(seen) == 4 and sum(policy_text in text for text, _ in seen) == 2
        with_policy = [text for text, _ in seen if policy_text in text][0]
        assert with_policy.index(policy_text) < with_policy.index("According to Policy")
        prompts[placement] = with_policy
    assert prompts["system"] != prompts["user"]


def test_missing_split_file_is_a_one_line_error(ckpt, dataset, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(dataset, partial / "T-d2")
    (partial / "T-d2" / "override_test.jsonl").unlink()
    with pytest.raises(DataError, match=r"override_test\.jsonl: file not found") as err:
        run_eval(str(ckpt), partial / "T-d2", tmp_path / "o", EvalOptions(protocols=["override"]))
    assert "\n" not in str(err.value)
    res = cli("--model", str(ckpt), "--data", str(partial / "T-d2"), "--protocols", "accuracy,override")
    assert isinstance(res.exception, DataError) and "override_test.jsonl" in str(res.exception)
    res = cli("--model", str(ckpt), "--data", str(dataset), "--protocols", "accuracy,overide")
    assert isinstance(res.exception, ConfigError) and "'overide'" in str(res.exception)
    with pytest.raises(DataError, match="dataset directory not found"):
        run_eval(str(ckpt), tmp_path / "nowhere", tmp_path / "o", EvalOptions())


def test_several_datasets_and_results_kept_between_runs(dataset, tiny, tmp_path):
    _, processor = tiny
    root = tmp_path / "data"
    root.mkdir()
    for name in ("first", "second"):
        (root / name).symlink_to(dataset, target_is_directory=True)
    general = load_records(dataset / "general_test.jsonl")
    right = by_image(dataset, general, [f"\\boxed{{{r.answer}}}" for r in general])
    out = tmp_path / "out"
    evaluate_model(scripted(processor, right), root, out, EvalOptions(protocols=["forgetting"], progress=False))
    summary = json.loads((out / "scores.json").read_text())
    assert set(summary["datasets"]) == {"first", "second"}
    assert all(summary["datasets"][n]["forgetting"]["accuracy"] == 1.0 for n in ("first", "second"))
    assert (out / "first" / "predictions_forgetting.jsonl").is_file()

    # a later run on the same model keeps the earlier protocols and reads the baseline per dataset
    opts = EvalOptions(protocols=["accuracy", "forgetting"], limit=2, progress=False,
                       baseline_scores=out / "scores.json")
    evaluate_model(scripted(processor, lambda p: "\\boxed{nothing}"), root, out, opts)
    second = json.loads((out / "second" / "scores.json").read_text())["protocols"]
    assert second["forgetting"]["accuracy"] == 0.0 and second["forgetting"]["baseline_accuracy"] == 1.0
    assert second["forgetting"]["delta"] == -1.0 and second["accuracy"]["n"] == 2
    evaluate_model(scripted(processor, right), root, out, EvalOptions(protocols=["accuracy"], progress=False))
    assert set(json.loads((out / "second" / "scores.json").read_text())["protocols"]) == {"accuracy", "forgetting"}
    other = Subject(processor=processor, engine=ScriptedEngine(right), name="another model")
    evaluate_model(other, root, out, EvalOptions(protocols=["accuracy"], progress=False))
    assert set(json.loads((out / "second" / "scores.json").read_text())["protocols"]) == {"accuracy"}
    with pytest.raises(DataError, match="--baseline-scores"):
        evaluate_model(scripted(processor, right), root, out,
                       EvalOptions(protocols=["forgetting"], baseline_scores=tmp_path / "none.json"))


def test_forgetting_against_a_baseline_model(ckpt, dataset, tmp_path):
    opts = EvalOptions(protocols=["forgetting"], max_new_tokens=4, batch_size=4, progress=False)
    res = run_eval(str(ckpt), dataset, tmp_path / "out", opts, baseline_model=str(ckpt))["T-d2"]["protocols"]
    forgetting = res["forgetting"]
    after = read_rows(tmp_path / "out" / "predictions_forgetting.jsonl")
    before = read_rows(tmp_path / "out" / "predictions_forgetting_baseline.jsonl")
    assert [r["completion"] for r in after] == [r["completion"] for r in before]  # same weights, greedy
    assert forgetting["baseline_accuracy"] == pytest.approx(sum(own_correct(r) for r in before) / len(before))
    assert forgetting["delta"] == 0.0 and forgetting["baseline_source"] == str(ckpt)
    with pytest.raises(ConfigError, match="give one of them"):
        run_eval(str(ckpt), dataset, tmp_path / "o", EvalOptions(protocols=["forgetting"], baseline_scores=tmp_path
                 / "out" / "scores.json"), baseline_model=str(ckpt))
