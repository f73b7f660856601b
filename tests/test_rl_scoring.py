"""RL's accuracy reward is scored as evaluation scores: the recipe's text scorer and an LLM judge reach it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from test_teacher_http import Endpoint
from trimpi.cli import app
from trimpi.data.answers import Scoring, score_answer
from trimpi.data.schema import PolicyStore, Record, load_records
from trimpi.errors import ConfigError
from trimpi.eval.scoring import score_example
from trimpi.generation.client import make_client
from trimpi.generation.judge import AnswerJudge
from trimpi.pipeline import make_plan, parse_recipe
from trimpi.pipeline.execute import rl_config
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.trainer import config_rewards

RECIPE = {"name": "t", "model": "tiny:qwen2_5_vl", "methods": ["trimpi_grpo"],
          "stages": {"grpo": {"scorer": "lexical"}},
          "data": {"clevr": {"depths": [2], "policies": 2, "train_per_policy": 4, "test": 4, "cot": 2, "general": 2}}}

GOLD = '{"name": "GoogleSearch", "arguments": {"query": "tallest building in the world"}}'
CALL = '<think>search</think>{"name": "GoogleSearch", "arguments": {"query": "world tallest tower height"}}'


def test_a_recipes_scorer_reaches_the_rl_reward():
    rl_step = next(s for s in make_plan(parse_recipe(RECIPE)).steps if s.kind == "rl")
    cfg = rl_config(rl_step)
    assert cfg.scorer == "lexical"
    record = Record(id="g", task="gta", query="q", answer=GOLD, response=GOLD)
    _, parts = config_rewards(cfg).score([CALL], [record])
    lexical = score_answer(CALL, record, Scoring("lexical")).score
    assert parts["accuracy"] == [pytest.approx(lexical)] and 0.5 < lexical < 1.0  # tool right, query half right


def test_an_unknown_scorer_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError, match=r"--scorer must be one of default, bertscore, lexical, got 'bleu'"):
        RLConfig(scorer="bleu").resolved()
    recipe = {**RECIPE, "stages": {"grpo": {"scorer": "bleu"}}}
    with pytest.raises(ConfigError, match=r"stages\.grpo.*--scorer must be one of"):
        make_plan(parse_recipe(recipe))


@pytest.fixture
def judged_data(tmp_path):
    root = tmp_path / "data"
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "p.json").write_text(json.dumps({"name": "P", "text": "Always greet first.", "images": []}))
    row = {"id": "j1", "task": "support", "query": "Hi?", "answer": "Hello! How can I help?", "response": "",
           "images": [], "policy": "P", "policy_path": "policies/p.json", "answer_type": {"type": "judge", "rubric": "greets"}}
    (root / "train.jsonl").write_text(json.dumps(row) + "\n")
    return root


def _rl(data, tmp_path, *extra):
    return ["train", "rl", "--data", str(data), "--model", "unused", "--out", str(tmp_path / "out"),
            "--no-progress", *extra]


def test_rl_judge_reward_equals_the_eval_score(judged_data, tmp_path, monkeypatch):
    from trimpi.models import loading
    from trimpi.train.rl import trainer

    endpoint = Endpoint(lambda body: "Greets, then helps.\nScore: 7")
    seen = {}
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: (torch.nn.Linear(2, 2), None))
    monkeypatch.setattr(trainer, "make_accelerator", lambda *a: SimpleNamespace(device="cpu", is_main_process=True))
    monkeypatch.setattr(trainer, "train_rl", lambda cfg, *a, **k: seen.update(k, cfg=cfg) or {"step": 1})
    try:
        result = CliRunner().invoke(app, _rl(judged_data, tmp_path, "--judge", endpoint.url, "--judge-model", "j"))
        assert result.exit_code == 0, result.output
        record = load_records(judged_data / "train.jsonl")[0]
        completion = "<think>greet</think>Hello there, how can I help?"
        _, parts = seen["rewards"].score([completion], [record])
        judge = AnswerJudge(make_client(endpoint.url, "j"), PolicyStore(judged_data))
        evaluated = score_example(record, completion, "default", judge)
    finally:
        endpoint.close()
    assert parts["accuracy"] == [pytest.approx(evaluated["score"])] and evaluated["score"] == pytest.approx(0.7)
    assert endpoint.requests[0][2]["model"] == "j" and "Always greet first." in json.dumps(endpoint.requests[0][2])


def test_rl_on_judged_records_without_a_judge_fails_before_loading(judged_data, tmp_path, monkeypatch):
    from trimpi.models import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    result = CliRunner().invoke(app, _rl(judged_data, tmp_path))
    assert isinstance(result.exception, ConfigError)
    line = str(result.exception)
    assert "\n" not in line and "train.jsonl" in line and "'judge'" in line and "--judge" in line
