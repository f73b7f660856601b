"""Options are resolved once, in the plan: every step's config holds every option, so a changed default
(a dataclass field, the SFT defaults table, the RL learning rate by model size) changes the step's hash
and the stale step is rebuilt instead of silently reused."""

from __future__ import annotations

import dataclasses

import pytest

from trimpi.pipeline import make_plan, options, parse_recipe

RECIPE = {"name": "t", "model": "tiny:qwen2_5_vl", "methods": ["cot_sft_grpo", "trimpi_grpo"],
          "warmup": {"epochs": 1},
          "data": {"clevr": {"depths": [2], "policies": 2, "train_per_policy": 4, "test": 4, "cot": 2, "general": 2}}}


def ids(recipe: dict = RECIPE) -> dict[str, set[str]]:
    by_kind: dict[str, set[str]] = {}
    for s in make_plan(parse_recipe(recipe)).steps:
        by_kind.setdefault(s.kind, set()).add(s.id)
    return by_kind


def test_step_configs_hold_every_option_resolved():
    plan = make_plan(parse_recipe(RECIPE))
    sft = plan.models["cot_sft_grpo"].inputs[0]
    assert sft.config["options"]["epochs"] == 5 and sft.config["options"]["lr"] == 1e-3  # small-model defaults
    assert sft.config["options"]["grad_accum"] == 1 and "data" not in sft.config["options"]
    rl = plan.models["cot_sft_grpo"].config["options"]
    assert rl["learning_rate"] == 1e-4 and rl["beta"] == 0.01 and rl["epsilon_high"] == 0.3  # size and GRPO defaults
    warm = next(s for s in plan.steps if s.kind == "warmup")
    assert warm.config["options"]["epochs"] == 1 and warm.config["options"]["lr"] == 2e-3
    ev = plan.evals["trimpi_grpo"].config["options"]
    assert ev["batch_size"] == 8 and ev["max_new_tokens"] == 512 and "progress" not in ev


def test_stale_step_after_a_resolver_default_change_is_rebuilt(monkeypatch):
    from trimpi.train import sft

    before = ids()
    monkeypatch.setitem(sft.DEFAULTS, ("sft", True), (7, 1e-3, 4, 0))
    after = ids()
    assert before["sft"].isdisjoint(after["sft"]) and before["rl"].isdisjoint(after["rl"])  # sft and downstream
    assert before["cpt"] == after["cpt"] and before["warmup"] == after["warmup"] and before["data"] == after["data"]


@pytest.mark.parametrize("module, name, field, kinds", [
    ("trimpi.train.rl.config", "RLConfig", ("num_generations", 6), {"rl"}),
    ("trimpi.train.warmup", "WarmupOptions", ("lr", 1e-3), {"warmup", "cpt", "sft", "rl"}),
    ("trimpi.eval.runner", "EvalOptions", ("max_new_tokens", 256), set()),
])
def test_stale_step_after_a_dataclass_default_change_is_rebuilt(monkeypatch, module, name, field, kinds):
    import importlib

    mod = importlib.import_module(module)
    before = ids()
    changed = dataclasses.make_dataclass(name, [(field[0], type(field[1]), dataclasses.field(default=field[1]))],
                                         bases=(getattr(mod, name),))
    monkeypatch.setattr(mod, name, changed)
    after = ids()
    for kind in before:
        stale = kind in kinds or kind == "eval"  # every eval evaluates a changed model or runs with changed options
        assert before[kind].isdisjoint(after[kind]) if stale else before[kind] == after[kind], kind


def test_rl_learning_rate_follows_the_model_size(monkeypatch):
    monkeypatch.setitem(options.BUILT_PARAMETERS, options.TINY_PREFIX, 200_000_000)
    options.model_parameters.cache_clear()
    try:
        plan = make_plan(parse_recipe(RECIPE))
        assert plan.models["cot_sft_grpo"].config["options"]["learning_rate"] == 1e-6
        assert plan.models["cot_sft_grpo"].inputs[0].config["options"]["lr"] == 1e-3  # SFT threshold is 300M
    finally:
        options.model_parameters.cache_clear()


def test_built_sizes_give_the_builders_defaults():
    """The sizes the plan assumes for built models resolve to the same options as the models built."""
    from trimpi.models.presets import build_micro
    from trimpi.models.tiny import FAMILIES, build_tiny

    built = {"micro": build_micro(texts=["a small red cube"])[0]}
    built |= {f"tiny:{f}": build_tiny(f)[0] for f in FAMILIES}
    for name, model in built.items():
        actual = sum(p.numel() for p in model.parameters())
        assumed = options.model_parameters(name)
        for stage in ("cpt", "sft"):
            assert options.stage_options("s", {}, stage, "cot", actual) == \
                options.stage_options("s", {}, stage, "cot", assumed), name
        assert options.rl_options("s", {}, "grpo", True, actual) == options.rl_options("s", {}, "grpo", True, assumed)


def test_other_models_are_sized_from_their_config_without_weights(tmp_path):
    from trimpi.models.tiny import build_tiny

    model, _ = build_tiny("qwen2_5_vl")
    model.config.save_pretrained(tmp_path)  # config.json only: no weights to load
    assert options.model_parameters(str(tmp_path)) == sum(p.numel() for p in model.parameters())
    with pytest.raises(options.ConfigError, match="model: .*(cannot read its config|not a preset)"):
        options.model_parameters(str(tmp_path / "missing"))


@pytest.mark.slow
def test_smol_size_gives_the_builders_defaults():
    from trimpi.models.presets import build_smol

    actual = sum(p.numel() for p in build_smol()[0].parameters())
    assumed = options.model_parameters("smol")
    assert options.stage_options("s", {}, "sft", "cot", actual) == options.stage_options("s", {}, "sft", "cot", assumed)
    assert options.rl_options("s", {}, "grpo", True, actual) == options.rl_options("s", {}, "grpo", True, assumed)


def test_new_shipped_weights_rebuild_every_step_of_a_micro_recipe(monkeypatch, tmp_path):
    """A run made on micro-scratch (no shipped base) or on older weights is not reused for new weights."""
    from trimpi.models import presets

    recipe = {**RECIPE, "model": "micro"}
    monkeypatch.setattr(presets, "BASE_DIR", tmp_path / "none")
    scratch = ids(recipe)
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    (base / "base.json").write_text('{"sha256": "aaa"}')
    monkeypatch.setattr(presets, "BASE_DIR", base)
    first = ids(recipe)
    (base / "base.json").write_text('{"sha256": "bbb"}')
    second = ids(recipe)
    for kind in scratch:
        assert scratch[kind].isdisjoint(first[kind]) or kind == "data", kind
        assert first[kind].isdisjoint(second[kind]) or kind == "data", kind
    assert scratch["data"] == first["data"] == second["data"]
