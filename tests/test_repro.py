"""`trimpi repro` and the policy-following base: policy exclusion, in-context examples, config
validation, the base as shared pipeline steps, seed locks, and the mean ± std table built from
finished run directories."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _fixtures_train import write_dataset
from trimpi.errors import ConfigError, DataError, TrimpiError
from trimpi.pipeline import METHODS, execute
from trimpi.pipeline import repro as rp
from trimpi.pipeline.base import BaseOptions, dataset_tree_keys, in_context_examples, tree_key
from trimpi.pipeline.plan import make_plan
from trimpi.pipeline.steps import mark_done, status
from trimpi.report import repro as table_of
from trimpi.report import write_report
from trimpi.report.baselines import majority_accuracy

TREE = {"root": "1", "nodes": {"1": {"if_exists": {"color": "red"}, "yes": "Case 1", "no": "Case 2"}}}

CONFIG = {
    "name": "r", "model": "micro", "seeds": [0, 1], "base": {"policies": 3, "scenes": 20, "examples": 30},
    "settings": {"T-d2": {"data": {"clevr": {"depths": [2], "variant": "T", "policies": 2}, "setting": "T-d2"}}},
    "stages": {"sft": {"epochs": 1}},
    "methods": ["in_context", "cot_sft"],
    "eval": {"protocols": ["accuracy"]},
}


def write_config(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "repro.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return path


# ---- which policies the base may not see ----

def test_tree_key_ignores_names_and_text_but_not_the_tree():
    a = {**TREE, "name": "L2-A", "text": "Policy L2-A ..."}
    b = {**TREE, "name": "L2-B", "text": "Policy L2-B, worded otherwise"}
    other = {"root": "1", "nodes": {"1": {"if_exists": {"color": "blue"}, "yes": "Case 1", "no": "Case 2"}}}
    assert tree_key(a) == tree_key(b)
    assert tree_key(a) != tree_key(other)


def test_dataset_tree_keys_reads_policy_folders_only(tmp_path):
    (tmp_path / "T-d2" / "policies").mkdir(parents=True)
    (tmp_path / "T-d2" / "override_policies").mkdir()
    (tmp_path / "scenes").mkdir()
    (tmp_path / "T-d2" / "policies" / "a.json").write_text(json.dumps(TREE))
    swapped = {**TREE, "nodes": {"1": {**TREE["nodes"]["1"], "yes": "Case 2", "no": "Case 1"}}}
    (tmp_path / "T-d2" / "override_policies" / "b.json").write_text(json.dumps(swapped))
    (tmp_path / "scenes" / "s.json").write_text(json.dumps({**TREE, "nodes": {}}))  # not a policy folder
    assert dataset_tree_keys(tmp_path) == {tree_key(TREE), tree_key(swapped)}


def test_in_context_examples_put_the_policy_in_the_system_turn_and_drop_excluded(tmp_path):
    root = write_dataset(tmp_path / "d", n=4)
    examples, counts = in_context_examples([root], excluded=set())
    assert counts == {"examples": 4, "policies": 1, "dropped_records": 0, "excluded_policies": 0}
    system, user, assistant = examples[0]["messages"]
    assert system["role"] == "system"
    assert any("Policy L2-Surinu" in b.get("text", "") for b in system["content"])
    assert any(b["type"] == "image" for b in system["content"])  # the policy's image travels with it
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert "Condition 1" in assistant["content"][0]["text"]  # reasoning, then the boxed answer
    with pytest.raises(DataError, match="no in-context examples"):
        in_context_examples([root], excluded={tree_key(TREE)})


@pytest.mark.parametrize("change, match", [
    ({"variants": ["X"]}, "base.variants"),
    ({"depths": [3]}, "base.depths"),
    ({"examples": 1000, "policies": 2, "scenes": 10}, "base.examples"),
    ({"batch_size": 0}, "base.batch_size"),
])
def test_base_options_check(change, match):
    with pytest.raises(ConfigError, match=match):
        BaseOptions(**change).check()


# ---- config ----

def test_load_repro_builds_each_setting_recipe(tmp_path):
    cfg = rp.load_repro(write_config(tmp_path))
    recipe = rp.setting_recipe(cfg, "T-d2", 1)
    assert recipe.seed == 1 and recipe.model == "micro" and recipe.name == "r-T-d2"
    assert recipe.methods == ["in_context", "cot_sft"]
    assert recipe.base["policies"] == 3 and recipe.base["datasets"] == [CONFIG["settings"]["T-d2"]["data"]]


def test_setting_stages_replace_shared_ones(tmp_path):
    settings = {"T-d2": {**CONFIG["settings"]["T-d2"], "stages": {"sft": {"epochs": 5}}}}
    cfg = rp.load_repro(write_config(tmp_path, settings=settings))
    assert rp.setting_recipe(cfg, "T-d2", 0).stages["sft"]["epochs"] == 5


def test_run_level_keys_reach_every_setting_and_its_eval_steps(tmp_path):
    judge = {"url": "http://localhost:8000/v1", "model": "judge-7b"}
    cfg = rp.load_repro(write_config(tmp_path, judge=judge, engine="vllm", dtype="float32"))
    recipe = rp.setting_recipe(cfg, "T-d2", 0)
    assert (recipe.judge.url, recipe.judge.model, recipe.engine, recipe.dtype) == (*judge.values(), "vllm", "float32")
    assert {s.config.get("judge", {}).get("model") for s in make_plan(recipe).steps if s.kind == "eval"} >= {"judge-7b"}
    assert rp.setting_recipe(rp.load_repro(write_config(tmp_path)), "T-d2", 0).judge is None


@pytest.mark.parametrize("changes, match", [
    ({"judge": {"url": "localhost:8000"}}, r"settings\.T-d2.*judge\.url: expected an http"),
    ({"engine": "tgi"}, r"engine: expected one of"),
    ({"base": {"out": "x"}}, r"base: base\.out: unknown key"),
    ({"base": {"scnes": 3}}, r"base\.scnes: unknown key"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"methods": ["cot_sft", "magic"]}, "unknown method 'magic'"),
    ({"stages": {"sft": {"epochz": 1}}}, r"settings\.T-d2"),
    ({"extra": 1}, "extra"),
])
def test_load_repro_errors_are_one_line(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match) as info:
        rp.load_repro(write_config(tmp_path, **changes))
    assert "\n" not in str(info.value)


def test_load_repro_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        rp.load_repro(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        rp.load_repro(tmp_path / "bad.yaml")
    (tmp_path / "twice.yaml").write_text("name: a\nseeds: [0]\nname: b\n")
    with pytest.raises(ConfigError, match=r"twice.yaml:3: name: key given twice"):
        rp.load_repro(tmp_path / "twice.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        rp.load_repro(tmp_path / "list.yaml")


TWO_SETTINGS = {**CONFIG["settings"],
                "M-d2": {"data": {"clevr": {"depths": [2], "variant": "M", "policies": 2}, "setting": "M-d2"}}}


def base_ids(cfg: rp.ReproConfig, setting: str = "T-d2", seed: int = 0) -> tuple[str, str]:
    plan = make_plan(rp.setting_recipe(cfg, setting, seed))
    return plan.base.id, plan.base_eval.id


def test_base_is_the_same_steps_in_every_setting_and_excludes_every_setting(tmp_path):
    cfg = rp.load_repro(write_config(tmp_path, settings=TWO_SETTINGS))
    a, b = (make_plan(rp.setting_recipe(cfg, s, 0)) for s in ("T-d2", "M-d2"))
    assert a.base.id == b.base.id and a.base_eval.id == b.base_eval.id
    own, *excluded = a.base.inputs[1:]
    assert own.config["source"] == "policy_base" and set(own.config["clevr"]) == {"T", "M"}
    assert [d.config["setting"] for d in excluded] == list(cfg.settings)  # every setting's data, in config order
    assert {a.data.id, b.data.id} == {d.id for d in excluded} and a.data in excluded
    assert [s.kind for s in a.steps[:7]] == ["data", "data", "data", "base", "warmup", "sft", "eval"]
    assert a.models["in_context"] is a.base and a.base.config["target"] == "in_context"
    init = a.base.inputs[0].inputs[0]
    assert init.kind == "base" and init.inputs == [own]  # the settings' ClevrPolicy text adds no words
    gta = rp.load_repro(write_config(tmp_path, settings={**TWO_SETTINGS, "GTA": {"data": {"gta": {}}}}))
    init = make_plan(rp.setting_recipe(gta, "GTA", 0)).base.inputs[0].inputs[0]
    assert [d.config["source"] for d in init.inputs] == ["policy_base", "gta"]


def test_base_steps_change_with_options_exclusions_and_seed_but_not_with_how_it_is_measured(tmp_path):
    cfg = rp.load_repro(write_config(tmp_path))
    model, measured = base_ids(cfg)
    assert base_ids(cfg, seed=1)[0] != model
    assert base_ids(rp.load_repro(write_config(tmp_path, base={"policies": 4, "scenes": 20, "examples": 30})))[0] != model
    more = rp.load_repro(write_config(tmp_path, settings=TWO_SETTINGS))
    assert base_ids(more)[0] != model  # one more dataset whose policies are excluded
    longer = rp.load_repro(write_config(tmp_path, base={"policies": 3, "scenes": 20, "examples": 30, "max_new_tokens": 192}))
    assert base_ids(longer) == (model, base_ids(longer)[1]) and base_ids(longer)[1] != measured


@pytest.fixture
def fake_steps(monkeypatch):
    """Every executor replaced by one that records the step kind (evals return an in-context score)."""
    ran = []

    def fake(step, ctx):
        ran.append(step.kind)
        if step.kind == "eval" and step.config["protocols"] == ["in_context"] and step.inputs[1].config.get(
                "source") == "policy_base":
            return {"settings": {"T-d2": {"in_context": {"score": 0.5}}}}
        if step.kind == "eval":
            return {"protocols": {p: {"score": 0.25} for p in step.config["protocols"]}}
        return {}

    for kind in execute.EXECUTORS:
        monkeypatch.setitem(execute.EXECUTORS, kind, fake)
    return ran


def test_seed_builds_the_base_once_and_remeasures_it_without_retraining(tmp_path, fake_steps):
    cfg = rp.load_repro(write_config(tmp_path, settings=TWO_SETTINGS))
    rp.run_seed(cfg, tmp_path, 0, echo=lambda _: None, after=write_report)
    assert fake_steps.count("warmup") == 1 and fake_steps.count("base") == 1  # shared by both settings
    assert fake_steps.count("data") == 3 and rp.seed_finished(cfg, tmp_path, 0)
    run = json.loads((rp.run_dir(tmp_path, "M-d2", 0) / "run.json").read_text())
    assert run["store"] == "../../.." and run["base"]["chain"][-1] == run["methods"]["in_context"]["model"]
    assert "## Policy-following base" in (rp.run_dir(tmp_path, "M-d2", 0) / "report.md").read_text()
    fake_steps.clear()
    remeasured = rp.load_repro(write_config(tmp_path, settings=TWO_SETTINGS, base={**CONFIG["base"],
                                                                                   "max_new_tokens": 64}))
    assert not rp.seed_finished(remeasured, tmp_path, 0)
    rp.run_seed(remeasured, tmp_path, 0, echo=lambda _: None)
    assert fake_steps == ["eval"]  # only the base's evaluation: nothing retrains
    table = table_of.aggregate(remeasured, tmp_path)
    assert table["bases"]["seed-0"]["in_context_accuracy"] == {"T-d2": 0.5}


def test_base_only_runs_the_base_steps(tmp_path, fake_steps):
    cfg = rp.load_repro(write_config(tmp_path))
    record = rp.run_base(cfg, tmp_path, 1, echo=lambda _: None)
    assert fake_steps == ["data", "data", "base", "warmup", "sft", "eval"]
    assert record["result"]["settings"]["T-d2"]["in_context"]["score"] == 0.5


def hold(path: Path):
    code = (f"from trimpi.data.io import exclusive\nimport time\nwith exclusive({str(path)!r}):\n"
            "    print('ok', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ok"
    return proc


def test_fault3_seed_children_run_under_the_parents_lock_but_a_seed_runs_once(tmp_path, fake_steps):
    cfg = rp.load_repro(write_config(tmp_path))
    parent = hold(tmp_path)  # a whole `trimpi repro` on OUT
    try:
        rp.run_seed(cfg, tmp_path, 0, echo=lambda _: None)  # its `--seed 0` child is not locked out
        with pytest.raises(TrimpiError, match=f"pid {parent.pid}"):
            rp.run_repro(cfg, tmp_path / "c.yaml", tmp_path, echo=lambda _: None)  # a second whole repro is
    finally:
        parent.kill()
        parent.wait()
    seed = hold(tmp_path / "seed-1")  # seed 1 being run by another process
    try:
        with pytest.raises(TrimpiError, match=f"pid {seed.pid}"):
            rp.run_seed(cfg, tmp_path, 1, echo=lambda _: None)
    finally:
        seed.kill()
        seed.wait()
    assert status(make_plan(rp.setting_recipe(cfg, "T-d2", 1)).data, tmp_path) == "todo"


def test_cli_errors_are_one_line(tmp_path):
    config = str(write_config(tmp_path))
    for args, message in ((["--seed", "7"], "error: --seed: 7 is not one of the config's seeds [0, 1]"),
                          (["--jobs", "0"], "error: --jobs: must be >= 1, got 0")):
        res = subprocess.run([sys.executable, "-m", "trimpi", "repro", config, "--out", str(tmp_path), *args],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stderr.strip() == message


# ---- the table ----

def test_mean_std_is_the_sample_standard_deviation():
    assert table_of.mean_std([]) == (None, None)
    assert table_of.mean_std([0.5]) == (0.5, 0.0)
    mean, std = table_of.mean_std([0.2, 0.4, 0.9])
    assert mean == pytest.approx(0.5)
    assert std == pytest.approx(math.sqrt(((0.3 ** 2) + (0.1 ** 2) + (0.4 ** 2)) / 2))


def fake_run(target: Path, scores: dict[str, dict[str, float]]) -> None:
    """A finished run directory: run.json naming each method's eval step, and that step's done.json."""
    methods, steps = {}, []
    for method, protocols in scores.items():
        step = f"eval-{method}"
        methods[method] = {"chain": [], "eval": step, "label": METHODS[method][0], "model": "m"}
        steps.append({"id": step, "kind": "eval"})
        (target / "steps" / step).mkdir(parents=True)
        result = {"protocols": {p: {"score": v} for p, v in protocols.items()}}
        (target / "steps" / step / "done.json").write_text(json.dumps({"result": result, "seconds": 2.0}))
    (target / "run.json").write_text(json.dumps({"methods": methods, "steps": steps, "recipe": {}}))


def test_aggregate_and_table_from_finished_runs(tmp_path):
    cfg = rp.load_repro(write_config(tmp_path))
    fake_run(rp.run_dir(tmp_path, "T-d2", 0), {"in_context": {"in_context": 0.5}, "cot_sft": {"accuracy": 0.6}})
    fake_run(rp.run_dir(tmp_path, "T-d2", 1), {"in_context": {"in_context": 0.7}, "cot_sft": {"accuracy": 0.8}})
    table = table_of.aggregate(cfg, tmp_path)
    entry = table["settings"]["T-d2"]["methods"]["cot_sft"]["accuracy"]
    assert entry["values"] == [0.6, 0.8]
    assert entry["mean"] == pytest.approx(0.7) and entry["std"] == pytest.approx(math.sqrt(0.02))
    assert table["settings"]["T-d2"]["methods"]["in_context"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert table["settings"]["T-d2"]["seeds"] == [0, 1]
    assert table["settings"]["T-d2"]["step_seconds"] == 8.0
    md = table_of.table_markdown(table)
    assert "| CoT SFT | 70.0 ± 14.1 |" in md and "| In-context | 60.0 ± 14.1 |" in md
    assert "over seeds 0, 1" in md and "override" not in md  # no override results: no override table
    table_of.write_outputs(table, tmp_path)
    assert json.loads((tmp_path / "repro.json").read_text())["settings"]["T-d2"]["seeds"] == [0, 1]
    assert (tmp_path / "repro.png").read_bytes()[:4] == b"\x89PNG"


def test_table_says_which_seeds_finished(tmp_path):
    cfg = rp.load_repro(write_config(tmp_path))
    fake_run(rp.run_dir(tmp_path, "T-d2", 1), {"in_context": {"in_context": 0.25}, "cot_sft": {"accuracy": 0.5}})
    md = table_of.table_markdown(table_of.aggregate(cfg, tmp_path))
    assert "finished seeds: T-d2 [1]" in md
    assert "| CoT SFT | 50.0 |" in md  # one seed: no spread shown


def finish_seed(cfg: rp.ReproConfig, out: Path, seed: int) -> None:
    """Mark every step a run of this seed would need as done: each setting's whole plan (datasets, base, methods)."""
    for setting in cfg.settings:
        for step in make_plan(rp.setting_recipe(cfg, setting, seed)).steps:
            mark_done(step, out, {}, 1.0)


def test_a_seed_is_finished_only_while_its_config_is_unchanged(tmp_path):
    cfg = rp.load_repro(write_config(tmp_path))
    finish_seed(cfg, tmp_path, 0)
    assert rp.seed_finished(cfg, tmp_path, 0) and not rp.seed_finished(cfg, tmp_path, 1)
    longer_sft = rp.load_repro(write_config(tmp_path, stages={"sft": {"epochs": 2}}))
    assert not rp.seed_finished(longer_sft, tmp_path, 0)  # its SFT and eval steps are new
    remeasured = rp.load_repro(write_config(tmp_path, base={**CONFIG["base"], "max_new_tokens": 64}))
    assert not rp.seed_finished(remeasured, tmp_path, 0)  # the base is measured again


def test_parallel_run_skips_finished_seeds_and_gives_the_rest_all_threads(tmp_path, monkeypatch):
    cfg = rp.load_repro(write_config(tmp_path))
    finish_seed(cfg, tmp_path, 0)
    started = []

    class Child:
        def __init__(self, cmd, env, **_):
            started.append((cmd[cmd.index("--seed") + 1], env["OMP_NUM_THREADS"]))
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(rp.subprocess, "Popen", Child)
    monkeypatch.setattr(rp.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(rp.time, "sleep", lambda _: None)
    rp.run_repro(cfg, tmp_path / "c.yaml", tmp_path, jobs=2, echo=lambda _: None)
    assert started == [("1", "4")]


def test_majority_accuracy_uses_training_statistics(tmp_path):
    root = write_dataset(tmp_path / "d", n=6)  # test = the first two training records
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    majority = max({r["answer"] for r in rows}, key=[r["answer"] for r in rows].count)
    test = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]
    assert majority_accuracy(root) == sum(r["answer"] == majority for r in test) / len(test)
    assert majority_accuracy(tmp_path) is None


def test_no_progress_silences_hugging_face_bars_too():
    code = ("import os, sys; from trimpi.cli import library_progress_env; "
            "os.environ.update(library_progress_env(sys.argv[1:])); "
            "from transformers.utils import logging; print(logging.is_progress_bar_enabled())")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    shown = [subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                            check=True).stdout.strip() for args in (["repro", "--no-progress"], ["repro"])]
    assert shown == ["False", "True"]
