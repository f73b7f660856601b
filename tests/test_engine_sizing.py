"""What a vLLM engine is started with: room for the most images one of its prompts shows (a ClevrPolicy
M-d6 policy alone has 20–33, more than the room of 8 the engine used to be started with) and the
longest sequence a user asks for (`vllm_max_model_len` of RL and evaluation), eager or compiled as asked
(`vllm_enforce_eager`)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from test_pipeline_options import RECIPE
from test_rl_fixtures import make_dataset
from trimpi.cli import app
from trimpi.data.schema import IMAGE_MARKER, PolicyStore, load_records, most_prompt_images
from trimpi.errors import ConfigError
from trimpi.eval.runner import EvalOptions, Subject, most_images_generated
from trimpi.generation import vllm_engine, vllm_server
from trimpi.generation.prompts import Prompt
from trimpi.generation.registry import build_engine
from trimpi.pipeline import make_plan, parse_recipe
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.trainer import rollout_engine

POLICY_IMAGES = 9


@pytest.fixture
def dataset(tmp_path):
    """Records with one image each whose policy shows POLICY_IMAGES images; test = train."""
    root = make_dataset(tmp_path / "data", n=3, with_policy_image=True)
    policy = json.loads((root / "policies" / "p0.json").read_text())
    policy["text"] += "".join(f" Example {i}: {IMAGE_MARKER}." for i in range(POLICY_IMAGES - 1))
    policy["images"] *= POLICY_IMAGES
    (root / "policies" / "p0.json").write_text(json.dumps(policy))
    shutil.copy(root / "train.jsonl", root / "test.jsonl")
    return root


def test_a_prompts_images_are_the_records_plus_its_policys_when_shown(dataset):
    records = load_records(dataset / "train.jsonl")
    assert most_prompt_images(records) == 1
    assert most_prompt_images(records, PolicyStore(dataset)) == 1 + POLICY_IMAGES
    assert most_prompt_images([], PolicyStore(dataset)) == 0


def test_evaluation_counts_the_images_of_the_protocols_that_generate(dataset):
    assert most_images_generated([dataset], ["accuracy"]) == 1
    assert most_images_generated([dataset], ["accuracy", "in_context"]) == 1 + POLICY_IMAGES
    assert most_images_generated([dataset], ["efficiency", "forgetting"]) == 0  # no generation; no general_test


class Recorded:
    def __init__(self, model, processor, options, seed=0):
        self.options = options


def test_vllm_is_started_with_room_for_the_images_and_the_length(monkeypatch):
    monkeypatch.setattr(vllm_engine, "VLLMEngine", Recorded)
    assert build_engine("vllm", None, None).options.max_images_per_prompt == 8
    assert build_engine("vllm", None, None, max_images=34).options.max_images_per_prompt == 34
    assert build_engine("vllm", None, None, max_images=0).options.max_images_per_prompt == 1  # text-only data
    assert build_engine("vllm", None, None).options.max_model_len is None  # the model's, at most 8192
    cfg = RLConfig(engine="vllm", vllm_max_model_len=16384)
    options = rollout_engine(cfg, None, None, max_images=3).options
    assert (options.max_model_len, options.max_images_per_prompt) == (16384, 3)
    opts = EvalOptions(vllm_max_model_len=12000)
    subject = Subject.from_model(None, None, engine="vllm", max_images=2, vllm_options=opts.vllm_options())
    assert (subject.engine.options.max_model_len, subject.engine.options.max_images_per_prompt) == (12000, 2)


def test_vllm_is_eager_on_cpu_unless_asked_to_compile(monkeypatch):
    monkeypatch.setattr(vllm_engine, "VLLMEngine", Recorded)
    on_gpu = torch.cuda.is_available()
    assert rollout_engine(RLConfig(engine="vllm"), None, None).options.eager is not on_gpu
    assert rollout_engine(RLConfig(engine="vllm", vllm_enforce_eager=False), None, None).options.eager is False
    assert EvalOptions(vllm_enforce_eager=True).vllm_options().eager is True
    assert EvalOptions().vllm_options().eager is not on_gpu


def test_the_vllm_flags_of_rl_and_eval_reach_their_options(dataset, tmp_path, monkeypatch):
    from trimpi.eval import runner
    from trimpi.models import loading
    from trimpi.train.rl import trainer

    seen = {}
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: (torch.nn.Linear(2, 2), None))
    monkeypatch.setattr(trainer, "make_accelerator", lambda *a: SimpleNamespace(device="cpu", is_main_process=True))
    monkeypatch.setattr(trainer, "train_rl", lambda cfg, *a, **k: seen.update(cfg=cfg) or {"step": 1})
    monkeypatch.setattr(runner, "run_eval", lambda *a, **k: seen.update(opts=a[3]) or {})
    flags = ["--vllm-max-model-len", "9000", "--no-vllm-enforce-eager"]
    result = CliRunner().invoke(app, ["train", "rl", "--data", str(dataset), "--model", "unused", "--out",
                                      str(tmp_path / "rl"), "--no-progress", *flags])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["eval", "--model", "unused", "--data", str(dataset), "--out", str(tmp_path / "ev"),
                                      "--vllm-enforce-eager"])
    assert result.exit_code == 0, result.output
    assert (seen["cfg"].vllm_max_model_len, seen["cfg"].vllm_enforce_eager) == (9000, False)
    assert (seen["opts"].vllm_max_model_len, seen["opts"].vllm_enforce_eager) == (None, True)


@pytest.mark.parametrize("enforce_eager", [True, False])
def test_a_vllm_server_is_started_eager_or_compiled_as_asked(monkeypatch, tmp_path, enforce_eager):
    started = {}
    monkeypatch.setattr(vllm_server.subprocess, "Popen",
                        lambda args, **kw: started.setdefault("args", args) and SimpleNamespace(pid=0))
    monkeypatch.setattr(vllm_server, "default_max_model_len", lambda model: 4096)
    server = object.__new__(vllm_server.VLLMServerEngine)
    server.options = vllm_engine.VLLMOptions(mode="server", enforce_eager=enforce_eager)
    server.workdir, server.host, server.port, server.api_key = tmp_path, "127.0.0.1", 1, "key"
    model = SimpleNamespace(parameters=lambda: iter([torch.zeros(1)]))
    server._spawn(model, seed=0)
    server.log.close()
    assert ("--enforce-eager" in started["args"]) is enforce_eager


def test_a_recipe_sets_the_vllm_length_and_compilation_of_rl_and_evaluation():
    grpo = {"vllm_max_model_len": 16384, "vllm_enforce_eager": False}
    recipe = {**RECIPE, "engine": "vllm", "stages": {"grpo": grpo},
              "eval": {"vllm_max_model_len": 12000, "vllm_enforce_eager": True}}
    plan = make_plan(parse_recipe(recipe))
    rl, ev = plan.models["cot_sft_grpo"].config["options"], plan.evals["cot_sft_grpo"].config["options"]
    assert (rl["vllm_max_model_len"], rl["vllm_enforce_eager"]) == (16384, False)
    assert (ev["vllm_max_model_len"], ev["vllm_enforce_eager"]) == (12000, True)
    with pytest.raises(ConfigError, match="vllm_max_model_len"):
        make_plan(parse_recipe({**RECIPE, "eval": {"vllm_max_model_len": 0}}))


def test_a_prompt_with_more_images_than_the_engine_has_room_for_is_one_line():
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    vllm_engine.check_image_counts([Prompt("a", [image] * 3)], 3)
    with pytest.raises(ConfigError, match="shows 4 images but the vLLM engine was started for at most 3") as e:
        vllm_engine.check_image_counts([Prompt("a", [image]), Prompt("b", [image] * 4)], 3)
    assert "\n" not in str(e.value)
