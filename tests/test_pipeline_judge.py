"""A recipe's `judge:` is the LLM judge of its eval steps (referral on non-ClevrPolicy data, answer type
"judge") and of its RL reward: parsed and checked like other sections, in the hash of eval and RL steps only."""

from __future__ import annotations

import json

import pytest

from test_eval_fixtures import ScriptedEngine
from test_teacher_http import Endpoint
from trimpi.data.schema import PolicyStore, load_records
from trimpi.errors import ConfigError
from trimpi.eval.scoring import score_example
from trimpi.generation.client import make_client
from trimpi.generation.judge import AnswerJudge
from trimpi.pipeline import make_plan, parse_recipe, run_recipe
from trimpi.pipeline.execute import Context, rl_config, rl_rewards, run_eval_step
from trimpi.pipeline.options import judge_args
from trimpi.pipeline.steps import Step

CLEVR = {"clevr": {"depths": [2], "policies": 2, "train_per_policy": 4, "test": 4, "cot": 2, "general": 2}}
RECIPE = {"name": "t", "model": "tiny:qwen2_5_vl", "methods": ["in_context", "direct_sft", "trimpi_grpo"],
          "data": CLEVR}
JUDGE = {"url": "http://127.0.0.1:9/v1", "model": "j"}
REPLY = "Greets, then helps.\nScore: 7"


def plan(**changes):
    return make_plan(parse_recipe({**RECIPE, **changes}))


def ids_by_kind(p) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in p.steps:
        out.setdefault(s.kind, []).append(s.id)
    return out


# ---- the recipe key ---------------------------------------------------------------------------------------------


def test_judge_is_an_endpoint_or_a_local_model():
    endpoint = parse_recipe({**RECIPE, "judge": JUDGE}).judge
    assert (endpoint.url, endpoint.model) == (JUDGE["url"], "j")
    local = parse_recipe({**RECIPE, "judge": {"model": "checkpoints/judge"}}).judge
    assert local.url is None and local.model == "checkpoints/judge"
    assert parse_recipe(RECIPE).judge is None


def test_judge_args_are_those_of_trimpi_eval():
    assert judge_args({"url": JUDGE["url"], "model": "j"}) == (JUDGE["url"], "j")  # --judge URL --judge-model j
    assert judge_args({"url": None, "model": "ckpt"}) == ("ckpt", None)  # --judge ckpt
    assert judge_args(None) == (None, None)


@pytest.mark.parametrize("judge, key", [
    ({"urll": "http://x"}, "judge.urll: unknown key"),
    ({**JUDGE, "max_tokens": 9}, "judge.max_tokens: unknown key"),
    ({"url": "localhost:8000", "model": "j"}, "judge.url: expected an http"),
    ({"model": " "}, "judge.model: must not be empty"),
    ({}, "judge: give url"),
    ("http://127.0.0.1:9/v1", "judge: expected a mapping"),
])
def test_bad_judge_is_one_line_naming_the_key(judge, key):
    with pytest.raises(ConfigError) as info:
        parse_recipe({**RECIPE, "judge": judge})
    assert "\n" not in str(info.value) and key in str(info.value), str(info.value)


def test_a_local_judge_model_is_checked_before_work(tmp_path):
    with pytest.raises(ConfigError, match=r"^judge\.model: unknown tiny family 'tiny:gpt'"):
        run_recipe(parse_recipe({**RECIPE, "judge": {"model": "tiny:gpt"}}), tmp_path / "o", dry_run=True,
                   echo=lambda s: None)
    with pytest.raises(ConfigError, match=r"^judge\.model: .*not a model directory"):
        run_recipe(parse_recipe({**RECIPE, "judge": {"model": str(tmp_path)}}), tmp_path / "o", dry_run=True,
                   echo=lambda s: None)


# ---- the plan: eval and RL steps carry the judge, nothing else changes -------------------------------------------


def test_the_judge_reaches_eval_and_rl_steps_only():
    without, judged = plan(), plan(judge=JUDGE)
    for step in judged.steps:
        assert step.config.get("judge") == (JUDGE if step.kind in ("eval", "rl") else None), step.id
    assert all("judge" not in s.config for s in without.steps)  # no judge: the configs (and hashes) of before
    before, after = ids_by_kind(without), ids_by_kind(judged)
    for kind in before:
        changed = kind in ("eval", "rl")
        assert set(before[kind]).isdisjoint(after[kind]) if changed else before[kind] == after[kind], kind
    rl = next(s for s in judged.steps if s.kind == "rl")
    assert rl_config(rl) == rl_config(next(s for s in without.steps if s.kind == "rl"))  # RL options unchanged


def test_changing_the_judge_reruns_eval_and_rl_only():
    a, b = ids_by_kind(plan(judge=JUDGE)), ids_by_kind(plan(judge={**JUDGE, "model": "other"}))
    local = ids_by_kind(plan(judge={"model": "checkpoints/judge"}))
    for kind in a:
        if kind in ("eval", "rl"):
            assert set(a[kind]).isdisjoint(b[kind]) and set(a[kind]).isdisjoint(local[kind]), kind
        else:
            assert a[kind] == b[kind] == local[kind], kind


def test_the_base_evaluation_on_clevrpolicy_is_not_judged():
    judged = plan(judge=JUDGE, base={"depths": [2], "policies": 2, "scenes": 3, "test": 2, "examples": 4})
    assert "judge" not in judged.base_eval.config and all("judge" in e.config for e in judged.evals.values())


def test_dry_run_shows_the_judge(tmp_path):
    lines: list[str] = []
    record = run_recipe(parse_recipe({**RECIPE, "judge": JUDGE}), tmp_path / "o", dry_run=True, echo=lines.append)
    assert f"judge: j at {JUDGE['url']} (eval steps and the RL reward)" in lines
    assert record["recipe"]["judge"] == {**JUDGE, "api_key_env": None}
    assert all(s["config"]["judge"] == JUDGE for s in record["steps"] if s["kind"] in ("eval", "rl"))
    lines.clear()
    run_recipe(parse_recipe({**RECIPE, "judge": {"model": "tiny:qwen2_5_vl"}}), tmp_path / "o", dry_run=True,
               echo=lines.append)
    assert "judge: local model tiny:qwen2_5_vl (eval steps and the RL reward)" in lines
    lines.clear()
    run_recipe(parse_recipe(RECIPE), tmp_path / "o", dry_run=True, echo=lines.append)
    assert not any(line.startswith("judge:") for line in lines)


# ---- check_data: referral off ClevrPolicy and judged records need the judge ---------------------------------------


def write_imported(root, answer_type=None):
    """An imported-style dataset of task 'support' (one policy, no images), optionally of answer type judge."""
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "p.json").write_text(json.dumps({"name": "P", "text": "Always greet first.", "images": []}))
    rows = [{"id": f"s{i}", "task": "support", "query": f"Hi, question {i}?", "answer": "Hello! How can I help?",
             "response": "Hello! How can I help?", "reasoning": "The policy says to greet first.", "images": [],
             "policy": "P", "policy_path": "policies/p.json",
             **({"answer_type": answer_type} if answer_type else {})} for i in range(3)]
    for split in ("train", "train_cot", "test"):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def check(tmp_path, data, methods, protocols, judge=None):
    recipe = {**RECIPE, "data": data, "methods": methods, "eval": {"protocols": protocols},
              **({"judge": judge} if judge else {})}
    return run_recipe(parse_recipe(recipe), tmp_path / "o", dry_run=True, echo=lambda s: None)


def test_referral_on_gtapolicy_needs_the_recipes_judge(tmp_path):
    with pytest.raises(ConfigError) as info:
        check(tmp_path, {"gta": {}}, ["direct_sft"], ["accuracy", "referral"])
    message = str(info.value)
    assert message.startswith("eval.protocols: referral on GTAPolicy") and "add `judge:` to the recipe" in message
    assert "\n" not in message
    record = check(tmp_path, {"gta": {}}, ["direct_sft"], ["accuracy", "referral"], judge=JUDGE)
    assert record["steps"][-1]["config"]["protocols"] == ["accuracy", "referral"]


def test_referral_on_imported_data_needs_the_recipes_judge(tmp_path):
    data = {"path": str(write_imported(tmp_path / "d"))}
    with pytest.raises(ConfigError, match=r"^data\.path: .*referral on task 'support' needs an LLM judge: add "
                                          r"`judge:` to the recipe"):
        check(tmp_path, data, ["direct_sft"], ["accuracy", "referral"])
    check(tmp_path, data, ["direct_sft"], ["accuracy", "referral"], judge=JUDGE)


@pytest.mark.parametrize("methods, protocols, split", [
    (["direct_sft"], ["accuracy"], "test.jsonl"),  # evaluation scores test.jsonl
    (["cot_sft_grpo"], ["efficiency"], "train.jsonl"),  # the RL reward scores train.jsonl (efficiency: no score)
])
def test_judged_records_need_the_recipes_judge(tmp_path, methods, protocols, split):
    data = {"path": str(write_imported(tmp_path / "d", {"type": "judge", "rubric": "greets"}))}
    with pytest.raises(ConfigError) as info:
        check(tmp_path, data, methods, protocols)
    message = str(info.value)
    assert message.startswith("data.path: ") and split in message and "'judge'" in message
    assert "add `judge:` to the recipe" in message and "\n" not in message
    check(tmp_path, data, methods, protocols, judge=JUDGE)


# ---- execution: the eval step and the RL reward ask the recipe's judge -------------------------------------------


def test_an_eval_step_of_a_recipe_with_a_judge_calls_it(tmp_path, monkeypatch):
    from trimpi.eval import runner
    from trimpi.models import loading
    from trimpi.models.tiny import build_tiny

    data = write_imported(tmp_path / "d", {"type": "judge", "rubric": "greets"})
    endpoint = Endpoint(lambda body: REPLY)
    try:
        p = plan(data={"path": str(data)}, judge={"url": endpoint.url, "model": "j"},
                 eval={"protocols": ["accuracy", "referral"], "max_new_tokens": 8})
        ev = p.evals["direct_sft"]
        step = Step("eval", ev.config, [p.steps[1], p.data])  # the base model: no training needed
        model = build_tiny("idefics3", seed=0)
        engine = ScriptedEngine(lambda prompt: "<think>greet</think>Hello there, how can I help?")
        engine.close = lambda: None
        monkeypatch.setattr(loading, "load_model", lambda *a, **k: model)
        monkeypatch.setattr(runner, "make_engine", lambda *a, **k: engine)
        result = run_eval_step(step, Context(out=tmp_path / "store"))
    finally:
        endpoint.close()
    referral, accuracy = result["protocols"]["referral"], result["protocols"]["accuracy"]
    assert referral["method"] == "judge" and referral["judge"] == f"j@{endpoint.url}" and referral["n"] == 3
    assert referral["score"] == pytest.approx(0.7)
    assert accuracy["score"] == pytest.approx(0.7)  # every judged answer rated 7 / 10
    texts = [json.dumps(body) for _, _, body in endpoint.requests]
    assert len(texts) == 6 and all(json.loads(t)["model"] == "j" for t in texts)
    assert sum("refers to a policy correctly" in t for t in texts) == 3  # referral's judge
    assert sum("free-form answer" in t and "greets" in t for t in texts) == 3  # answer type judge, its rubric


def test_the_rl_reward_asks_the_recipes_judge_as_eval_does(tmp_path):
    data = write_imported(tmp_path / "d", {"type": "judge", "rubric": "greets"})
    endpoint = Endpoint(lambda body: REPLY)
    try:
        p = plan(data={"path": str(data)}, judge={"url": endpoint.url, "model": "j"})
        rl = next(s for s in p.steps if s.kind == "rl")
        record = load_records(data / "train.jsonl")[0]
        completion = "<think>greet</think>Hello there, how can I help?"
        _, parts = rl_rewards(rl, rl_config(rl), data).score([completion], [record])
        judge = AnswerJudge(make_client(endpoint.url, "j"), PolicyStore(data))  # `trimpi eval --judge URL`'s
        evaluated = score_example(record, completion, "default", judge)
    finally:
        endpoint.close()
    assert parts["accuracy"] == [pytest.approx(evaluated["score"])] and evaluated["score"] == pytest.approx(0.7)
    assert endpoint.requests[0][2] == endpoint.requests[1][2]  # the very same judge request
    assert "Always greet first." in json.dumps(endpoint.requests[0][2])


def test_without_a_judge_the_rl_reward_has_none(tmp_path):
    rl = next(s for s in plan().steps if s.kind == "rl")
    rewards = rl_rewards(rl, rl_config(rl), tmp_path)
    record = load_records(write_imported(tmp_path / "d", {"type": "judge"}) / "train.jsonl")[0]
    with pytest.raises(ConfigError, match="needs a judge model"):
        rewards.score(["<think>x</think>Hello"], [record])
