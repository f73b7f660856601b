"""Recipes: every shipped recipe validates and dry-runs on a tiny Qwen2.5-VL; bad recipes fail before work."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from trimpi.cli.run import run
from trimpi.errors import ConfigError
from trimpi.pipeline import METHODS, load_recipe, make_plan, parse_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [ROOT / "configs" / "demo.yaml", *sorted((ROOT / "configs" / "paper").glob("*.yaml"))]
TINY = {"model": "tiny:qwen2_5_vl"}


def minimal(**changes) -> dict:
    base = {"name": "t", "model": "tiny:qwen2_5_vl", "methods": ["cot_sft"],
            "data": {"clevr": {"depths": [2], "policies": 2, "train_per_policy": 4, "test": 4, "cot": 2, "general": 2}}}
    return {**base, **changes}


def test_paper_recipes_cover_models_datasets_and_depths():
    names = {p.stem for p in RECIPES}
    for size in ("7b", "3b"):
        for setting in ("clevr-t-d4", "clevr-t-d6", "clevr-m-d4", "clevr-m-d6", "gtapolicy"):
            assert f"qwen2.5-vl-{size}-{setting}" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_dry_runs_on_tiny_qwen(path, tmp_path):
    recipe = load_recipe(path, TINY)
    lines: list[str] = []
    record = run_recipe(recipe, tmp_path / "out", dry_run=True, echo=lines.append)
    assert not (tmp_path / "out").exists(), "a dry run must not write anything"
    assert set(record["methods"]) == set(recipe.methods)
    assert len(lines) == len(record["steps"]) and all(line.startswith("todo") for line in lines)
    if path.parent.name == "paper":
        assert recipe.accelerate and Path(recipe.accelerate).is_file()
        # the paper's methods: all but TriMPI with direct answers (for data without traces)
        assert set(recipe.methods) == set(METHODS) - {"trimpi_grpo_answers", "trimpi_dapo_answers"}


def test_paper_plan_shares_stages_between_methods():
    plan = make_plan(load_recipe(ROOT / "configs/paper/qwen2.5-vl-7b-clevr-t-d6.yaml", TINY))
    kinds = [s.kind for s in plan.steps]
    # data, base, 1 direct sft, cot sft, cpt, cot sft after cpt, 8 RL runs, one eval per method
    assert kinds.count("cpt") == 1 and kinds.count("sft") == 3 and kinds.count("rl") == 8
    assert kinds.count("eval") == len(METHODS) - 2  # all but TriMPI with direct answers
    sft = plan.models["cot_sft"]
    assert plan.models["cot_sft_grpo"].inputs[0] is sft and plan.models["cot_sft_dapo"].inputs[0] is sft
    assert plan.models["trimpi_grpo_no_cpt"].inputs[0] is sft
    tri = plan.models["trimpi_grpo"].inputs[0]
    assert plan.models["trimpi_dapo"].inputs[0] is tri and tri.inputs[0].kind == "cpt"
    assert plan.models["trimpi_grpo_no_poro"].config["policy_rollout"] is False
    assert plan.models["trimpi_grpo"].config["policy_rollout"] is True


def test_demo_recipe_is_micro_on_clevr_t_depth_2():
    from trimpi.cli.demo import demo_recipe

    recipe = load_recipe(ROOT / "configs/demo.yaml")
    assert recipe.model == "micro" and recipe.methods == ["in_context", "cot_sft", "trimpi_grpo"]
    assert recipe.data.clevr["depths"] == [2] and recipe.data.clevr["variant"] == "T"
    assert demo_recipe().read_bytes() == (ROOT / "configs/demo.yaml").read_bytes()  # `trimpi demo` runs this file


@pytest.mark.parametrize("changes, key", [
    ({"methds": ["cot_sft"]}, "methds"),
    ({"methods": ["cot_sft", "trimpi_grp"]}, "methods[1]"),
    ({"stages": {"sft": {"lrr": 1e-4}}}, "stages.sft.lrr"),
    ({"stages": {"grpo": {"num_generations": "five"}}}, "stages.grpo.num_generations"),
    ({"stages": {"ppo": {}}}, "stages.ppo"),
    ({"eval": {"protocols": ["accuracy"], "batchsize": 2}}, "eval.batchsize"),
    ({"warmup": {"epoch": 2}}, "warmup.epoch"),
    ({"data": {"path": "/nonexistent/dataset"}}, "data.path"),
    ({"data": {"clevr": {"depths": [3]}}}, "data.clevr"),
    ({"data": {"clevr": {"depths": [2]}, "setting": "T-d4"}}, "data.setting"),
    ({"data": {}}, "data"),
    ({"model": "tiny:gpt"}, "model"),
    ({"data": {"gta": {}}, "eval": {"protocols": ["accuracy", "forgetting"]}}, "eval.protocols"),
    ({"data": {"gta": {"gta_dirr": "x"}}}, "data.gta.gta_dirr"),
    ({"model": "no-such-org/no-such-model"}, "model"),
    ({"stages": {"grpo": {"num_generations": 0}}, "methods": ["cot_sft_grpo"]}, "stages.grpo: --num-generations"),
    ({"stages": {"sft": {"lr": -1.0}}}, "stages.sft: "),
    ({"eval": {"protocols": ["accurcy"]}}, "eval.protocols: unknown protocol"),
    ({"base": {"polices": 2}}, "base.polices"),
    ({"base": {"warmup": {"epoch": 1}}}, "base.warmup.epoch"),
    ({"base": {}, "warmup": {"epochs": 1}}, "warmup: with a policy-following base"),
    ({"base": {"eval_batch_size": 0}}, "base.eval_batch_size"),
    ({"base": {"examples": 100, "policies": 2, "scenes": 10}}, "base.examples"),
    ({"base": {"datasets": [{"clevr": {"depths": [3]}}]}}, "base.datasets[0]"),
    ({"base": {"datasets": [{"path": "/nonexistent/dataset"}]}}, "base.datasets[0].path"),
])
def test_bad_recipe_fails_before_work_with_one_line_naming_the_key(tmp_path, changes, key):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        run_recipe(parse_recipe(minimal(**changes)), out, echo=lambda s: None)
    message = str(info.value)
    assert "\n" not in message and key in message, message
    assert not out.exists()


def test_missing_recipe_key_and_bad_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    recipe = minimal()
    del recipe["model"]
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="model: required key missing"):
        load_recipe(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")


def test_only_selects_methods_and_rejects_unknown():
    recipe = parse_recipe(minimal(methods=["cot_sft", "cot_sft_grpo", "direct_sft"]))
    plan = make_plan(recipe, only=["cot_sft_grpo"])
    assert list(plan.evals) == ["cot_sft_grpo"]
    assert [s.kind for s in plan.steps] == ["data", "base", "sft", "rl", "eval"]
    with pytest.raises(ConfigError, match="--only: method 'trimpi_grpo'"):
        make_plan(recipe, only=["trimpi_grpo"])


def test_cli_run_dry_run_and_error(tmp_path):
    app = typer.Typer()
    app.command()(run)
    result = CliRunner().invoke(app, [str(ROOT / "configs/demo.yaml"), "--out", str(tmp_path / "o"), "--dry-run",
                                      "--model", "tiny:qwen2_5_vl"])
    assert result.exit_code == 0, result.output
    assert "nothing run" in result.output and "trimpi_grpo" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(minimal(methods=["nope"])))
    result = CliRunner().invoke(app, [str(bad), "--dry-run"])
    assert isinstance(result.exception, ConfigError) and "methods[0]" in str(result.exception)


def test_recipe_problems_come_all_at_once_in_one_line():
    from trimpi.pipeline.recipe import parse_recipe

    with pytest.raises(ConfigError) as e:
        parse_recipe({"modle": "micro", "methods": ["nope"], "seed": "x"}, "r.yaml")
    text = str(e.value)
    assert "\n" not in text and text.startswith("r.yaml: modle: unknown key (did you mean 'model'?)")
    assert "seed:" in text and "unknown method 'nope'" in text and "data: required key missing" in text
    assert "model: required key missing" not in text  # the misspelled key stands for it
