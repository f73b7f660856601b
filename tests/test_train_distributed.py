"""Training under DeepSpeed ZeRO-3, checked with fakes (DeepSpeed is not installed here): final
and checkpoint saves write the weights accelerate gathers, not the module's own placeholders,
LoRA is merged from that gathered state, RL fills DeepSpeed's "auto" batch entries, and whole
weights are gathered (and generate synced) only under ZeRO-3. Without DeepSpeed the saved files
are byte for byte those of the plain save."""

from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from test_rl_fixtures import tiny_model
from trimpi.errors import TrimpiError
from trimpi.generation.engine import HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import PromptBuilder
from trimpi.models.loading import save_checkpoint
from trimpi.models.lora import apply_lora, merge_lora_state
from trimpi.models.tiny import build_tiny
from trimpi.train.distributed import (
    fill_deepspeed_auto,
    frozen_deepspeed_config,
    gathered_parameters,
    prepare_frozen,
    save_trained,
    zero3_enabled,
)
from trimpi.train.rl import checkpoint as ckpt
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.trainer import (
    deepspeed_values,
    make_accelerator,
    rollout_engine,
    sync_weights,
    train_rl,
)


def shifted(model, by: float = 0.5) -> dict:
    """A state dict unlike the model's own, standing in for what ZeRO-3 gathers from the shards."""
    return {k: v.detach().clone() + by for k, v in model.state_dict().items()}


def placeholders(model) -> None:
    """What ZeRO-3 leaves in a module: every parameter an empty tensor."""
    for p in model.parameters():
        p.data = torch.empty(0, dtype=p.dtype)


class Gathering:
    """A single-process accelerator whose get_state_dict returns `gathered` and empties the module."""

    is_main_process = True
    process_index = 0

    def __init__(self, gathered: dict):
        self.gathered, self.asked = gathered, []

    def get_state_dict(self, model, unwrap=True):
        self.asked.append(model)
        placeholders(model)
        return dict(self.gathered)  # save_pretrained empties the dict it is given

    def unwrap_model(self, model):
        return model

    def wait_for_everyone(self):
        pass


def plugin_accelerator(config: dict):
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config)))


ZERO3 = {"zero_optimization": {"stage": 3}}


def reloaded_state(path: Path, model_class) -> dict:
    return model_class.from_pretrained(path).state_dict()


def peft_merged(peft_model, state: dict) -> dict:
    """peft's own merge of `state` (a copy of the live model loaded with it, merged and unloaded)."""
    ref = copy.deepcopy(peft_model)
    ref.load_state_dict(state)
    return ref.merge_and_unload().state_dict()


def assert_same(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(actual[k], v), k


# --- saves write the gathered weights


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
def test_rl_saves_write_the_gathered_weights_not_the_modules_own(family, tmp_path):
    model, processor = build_tiny(family, seed=0)
    fresh = copy.deepcopy(model)
    gathered = shifted(model)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    acc = Gathering(gathered)
    saved = ckpt.save(acc, tmp_path, 3, model, processor, optimizer, scheduler, {}, {"position": 0})
    ckpt.save_final(acc, model, processor, tmp_path / "final")
    assert acc.asked == [model, model]
    ckpt._load_weights(fresh, saved)
    assert_same(fresh.state_dict(), gathered)
    assert_same(reloaded_state(tmp_path / "final", type(model)), gathered)


class DeepSpeedGathering(Gathering):
    """Gathering under a DeepSpeed (ZeRO-3) accelerate config."""

    def __init__(self, gathered: dict):
        super().__init__(gathered)
        self.state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ZERO3))


def test_rl_checkpoints_under_deepspeed_keep_every_optimizer_partition_through_the_engine(tmp_path):
    """Under ZeRO one process's optimizer.state_dict() is its partition only: the engine's own checkpoint
    (every process writes and reads its partition) replaces optimizer.pt, and a checkpoint resumes only
    under the kind of config it was saved with."""
    model, processor = build_tiny("idefics3", seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    calls = []

    def save_checkpoint(save_dir, tag):
        calls.append(("save", Path(save_dir).name, tag))
        (Path(save_dir) / tag).mkdir(parents=True)

    def load_checkpoint(load_dir, tag, load_optimizer_states, load_lr_scheduler_states):
        calls.append(("load", load_dir, tag, load_optimizer_states, load_lr_scheduler_states))
        return load_dir, {}

    model.save_checkpoint, model.load_checkpoint = save_checkpoint, load_checkpoint
    acc = DeepSpeedGathering(shifted(model))
    saved = ckpt.save(acc, tmp_path, 2, model, processor, optimizer, scheduler, {"x": 1}, {"position": 5})
    assert calls == [("save", "deepspeed", "state")]
    assert (saved / "deepspeed" / "state").is_dir() and not (saved / "optimizer.pt").exists()
    assert (saved / "model.safetensors").is_file()  # the gathered weights still load with from_pretrained
    optimizer.load_state_dict = lambda _: pytest.fail("the partitioned optimizer is the engine's to load")
    state, rank_state = ckpt.load(acc, saved, model, optimizer, scheduler)
    assert calls[-1] == ("load", str(saved / "deepspeed"), "state", True, False)
    assert state["step"] == 2 and rank_state["position"] == 5
    with pytest.raises(TrimpiError, match="saved with DeepSpeed; resume it under the same accelerate config"):
        ckpt.load(Gathering({}), saved, model, optimizer, scheduler)
    plain, _ = build_tiny("idefics3", seed=0)
    plain_opt = torch.optim.AdamW(plain.parameters())
    plain_saved = ckpt.save(Gathering(shifted(plain)), tmp_path / "p", 1, plain, processor, plain_opt,
                            torch.optim.lr_scheduler.LambdaLR(plain_opt, lambda _: 1.0), {}, {"position": 0})
    with pytest.raises(TrimpiError, match="saved without DeepSpeed"):
        ckpt.load(acc, plain_saved, model, optimizer, scheduler)


def test_rl_lora_final_save_merges_the_gathered_state(tmp_path):
    model, processor = build_tiny("idefics3", seed=0)
    torch.manual_seed(1)
    peft_model = apply_lora(model, rank=4, init=False)
    gathered = shifted(peft_model, 0.01)
    expected = peft_merged(peft_model, gathered)

    ckpt.save_final(Gathering(gathered), peft_model, processor, tmp_path)
    assert_same(reloaded_state(tmp_path, type(model)), expected)  # the merged model's keys: no lora ones
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert adapter
    assert all(torch.equal(v, gathered[k.replace(".weight", ".default.weight")]) for k, v in adapter.items())


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_sft_final_save_writes_the_gathered_weights(lora_rank, train_data, tmp_path, monkeypatch):
    from accelerate import Accelerator

    from trimpi.train.sft import StageOptions, run_stage

    seen = {}

    def get_state_dict(self, model, unwrap=True):
        module = self.unwrap_model(model)
        gathered = shifted(module, 0.01)
        seen["expected"] = peft_merged(module, gathered) if lora_rank else gathered
        placeholders(module)
        return dict(gathered)

    monkeypatch.setattr(Accelerator, "get_state_dict", get_state_dict)
    model, processor = build_tiny("idefics3")
    opts = StageOptions(data=str(train_data), model="-", out=str(tmp_path / "o"), stage="sft", target="answer",
                        lr=1e-3, batch_size=2, max_steps=1, save_steps=1000, lora_rank=lora_rank, progress=False)
    run_stage(opts, model=model, processor=processor)
    assert_same(reloaded_state(tmp_path / "o", type(model)), seen["expected"])


# --- LoRA merged from a state dict


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_merge_of_a_state_matches_peft(family, dtype):
    model, _ = build_tiny(family, seed=0)
    torch.manual_seed(1)
    peft_model = apply_lora(model.to(dtype), rank=4, init=False)
    state = shifted(peft_model, 0.01)
    assert_same(merge_lora_state(peft_model, state), peft_merged(peft_model, state))


def test_lora_merge_of_a_state_refuses_what_it_cannot_merge():
    from peft import LoraConfig, get_peft_model

    model, _ = build_tiny("idefics3", seed=0)
    dora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(ValueError, match="only plain linear LoRA"):
        merge_lora_state(dora, dora.state_dict())


@pytest.mark.parametrize("lora", [False, True])
def test_without_deepspeed_the_saved_files_are_the_plain_saves(lora, tmp_path):
    model, processor = build_tiny("qwen2_5_vl", seed=0)
    if lora:
        torch.manual_seed(1)
        model = apply_lora(model, rank=4, init=False)
    plain = copy.deepcopy(model).merge_and_unload() if lora else model
    save_checkpoint(plain, processor, tmp_path / "plain")
    acc = make_accelerator()
    save_trained(acc, acc.prepare(model), processor, tmp_path / "new")
    names = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "new").iterdir())
    for name in names:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "new" / name).read_bytes(), name


# --- DeepSpeed config, gathering and synced generation


def test_deepspeed_auto_entries_are_filled_and_given_ones_kept():
    config = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
              "gradient_clipping": 0.5, **ZERO3}
    cfg = RLConfig(per_device_train_batch_size=3, max_grad_norm=2.0)
    fill_deepspeed_auto(plugin_accelerator(config), deepspeed_values(cfg, world=4))
    # DeepSpeed asserts train_batch_size == micro-batch x accumulation x processes
    assert config == {"train_micro_batch_size_per_gpu": 3, "train_batch_size": 12, "gradient_accumulation_steps": 1,
                      "gradient_clipping": 0.5, **ZERO3}
    fill_deepspeed_auto(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None)), {"x": 1})  # no DeepSpeed: no-op


def test_zero3_is_read_from_the_deepspeed_plugin():
    assert zero3_enabled(plugin_accelerator(ZERO3))
    assert not zero3_enabled(plugin_accelerator({"zero_optimization": {"stage": 2}}))
    assert not zero3_enabled(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None)))
    assert not zero3_enabled(make_accelerator())


def test_rl_trainer_fills_deepspeed_batch_entries_before_prepare(rl_data, tmp_path):
    from accelerate import Accelerator

    root, records = rl_data
    config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
              "zero_optimization": {"stage": 2}}
    at_prepare = []

    class WithPlugin:
        def __init__(self, state):
            self._state, self.deepspeed_plugin = state, SimpleNamespace(deepspeed_config=config)

        def __getattr__(self, name):
            return getattr(self._state, name)

    class Recording(Accelerator):
        def prepare(self, *args):
            at_prepare.append(dict(config))
            return super().prepare(*args)

    acc = Recording(cpu=True)
    acc.state = WithPlugin(acc.state)
    model, processor = tiny_model()
    cfg = RLConfig(algo="grpo", num_generations=2, prompts_per_step=2, max_steps=1, max_completion_length=4,
                   per_device_train_batch_size=3)
    train_rl(cfg, model, processor, records, root, tmp_path / "out", accelerator=acc)
    assert at_prepare[0]["train_micro_batch_size_per_gpu"] == 3 and at_prepare[0]["gradient_accumulation_steps"] == 1


class FakeEngine(torch.nn.Module):
    """What deepspeed.initialize returns: an engine module around the model."""

    def __init__(self, module, config):
        super().__init__()
        self.module, self.config = module, config

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@pytest.fixture
def fake_deepspeed(monkeypatch):
    """A `deepspeed` module whose GatheredParameters records what it gathers and when it is open, and whose
    initialize wraps the model in a FakeEngine."""
    calls = SimpleNamespace(gathered=[], open=False, engines=[])

    @contextlib.contextmanager
    def gathered_parameters(params):
        calls.gathered.append(params)
        calls.open = True
        yield
        calls.open = False

    def initialize(model, config):
        calls.engines.append(FakeEngine(model, config))
        return calls.engines[-1], None, None, None

    deepspeed = SimpleNamespace(zero=SimpleNamespace(GatheredParameters=gathered_parameters), initialize=initialize)
    monkeypatch.setitem(sys.modules, "deepspeed", deepspeed)
    return calls


def test_parameters_are_gathered_only_under_zero3(fake_deepspeed):
    model = torch.nn.Linear(2, 2)
    with gathered_parameters(make_accelerator(), model):
        pass
    with gathered_parameters(plugin_accelerator({"zero_optimization": {"stage": 2}}), model):
        pass
    assert fake_deepspeed.gathered == []
    with gathered_parameters(plugin_accelerator(ZERO3), model):
        assert fake_deepspeed.open
    assert fake_deepspeed.gathered == [list(model.parameters())]


def test_weight_sync_gathers_for_engines_that_copy_weights(fake_deepspeed):
    model = torch.nn.Linear(2, 2)

    class Copying:
        def update_weights(self, policy):
            self.gathered_then = fake_deepspeed.open

    copying, shared = Copying(), SimpleNamespace(shares_weights=True, update_weights=lambda p: None)
    sync_weights(plugin_accelerator(ZERO3), copying, model)
    assert copying.gathered_then
    sync_weights(plugin_accelerator(ZERO3), shared, model)
    assert len(fake_deepspeed.gathered) == 1  # the engine that samples from the policy itself needs no gather


@pytest.mark.parametrize("synced", [False, True])
def test_hf_engine_generates_with_synced_gpus_only_when_asked(synced, rl_data, monkeypatch):
    root, records = rl_data
    model, processor = tiny_model()
    engine = rollout_engine(RLConfig(), model, processor, synced_gpus=synced)
    seen = {}

    def generate(**kwargs):
        seen.update(kwargs)
        ids = kwargs["input_ids"].repeat_interleave(kwargs["num_return_sequences"], 0)
        return torch.cat([ids, torch.full((len(ids), 1), kwargs["eos_token_id"][0])], 1)

    monkeypatch.setattr(model, "generate", generate)
    engine.generate([PromptBuilder(processor, root)(records[0])], 2, SamplingParams(max_completion_length=3))
    assert isinstance(engine, HFGenerateEngine) and seen["synced_gpus"] is (True if synced else None)


def test_only_the_last_micro_batch_ends_the_step(rl_data):
    from accelerate import Accelerator

    from trimpi.generation.engine import Completion
    from trimpi.train.rl.metrics import MetricSums
    from trimpi.train.rl.rollout import Sample, make_batch
    from trimpi.train.rl.update import normalizer, policy_update

    root, records = rl_data
    model, processor = tiny_model()
    prompt = PromptBuilder(processor, root)(records[0])
    samples = [Sample(record=records[0], group_id=0, policy_aware=False, prompt=prompt,
                      completion=Completion(token_ids=[5, 6], text="", truncated=True), reward=float(i))
               for i in range(3)]
    batch = make_batch(samples, "group", mask_truncated=False)
    flags = []

    class Recording(Accelerator):
        def backward(self, loss, **kwargs):
            flags.append(self.sync_gradients)
            super().backward(loss, **kwargs)

    acc = Recording(cpu=True)
    cfg = RLConfig(algo="grpo", beta=0.0, per_device_train_batch_size=1, max_completion_length=2).resolved()
    policy_update(acc, model, processor, batch, cfg, normalizer(batch, "dapo", 2, 1), 0, MetricSums())
    assert flags == [False, False, True] and acc.sync_gradients


# --- the reference model and the default learning rate under ZeRO-3


def test_a_frozen_models_engine_has_the_trained_ones_config_without_optimizer():
    config = {"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": True}, "optimizer": {"type": "AdamW"},
              "scheduler": {"type": "WarmupLR"}, **ZERO3}
    frozen = frozen_deepspeed_config(config)
    assert frozen == {"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": True}, **ZERO3}
    frozen["zero_optimization"]["stage"] = 0
    assert config["zero_optimization"]["stage"] == 3 and "optimizer" in config  # the trained model's is untouched


def test_a_frozen_model_gets_its_own_engine_only_under_zero3(fake_deepspeed):
    model = torch.nn.Linear(2, 2)
    plain = SimpleNamespace(device="cpu", state=SimpleNamespace(deepspeed_plugin=None))
    zero2 = SimpleNamespace(device="cpu", **vars(plugin_accelerator({"zero_optimization": {"stage": 2}})))
    assert prepare_frozen(plain, model) is model and prepare_frozen(plain, None) is None
    assert prepare_frozen(zero2, model) is model
    assert fake_deepspeed.engines == []
    engine = prepare_frozen(plugin_accelerator({"optimizer": {"type": "AdamW"}, **ZERO3}), model)
    assert fake_deepspeed.engines == [engine] and engine.module is model and not engine.training
    assert engine.config == ZERO3


def test_under_zero3_the_reference_is_never_a_copy_of_the_partitioned_policy():
    from trimpi.errors import ConfigError
    from trimpi.train.rl.trainer import reference_model

    model = torch.nn.Linear(2, 2)
    grpo, dapo = RLConfig(algo="grpo").resolved(), RLConfig(algo="dapo").resolved()
    with pytest.raises(ConfigError, match="ZeRO-3 needs a reference model loaded apart") as e:
        reference_model(grpo, model, zero3=True)
    assert "\n" not in str(e.value)
    given = torch.nn.Linear(2, 2)
    assert reference_model(grpo, model, given, zero3=True) is given
    assert reference_model(dapo, model, zero3=True) is None  # beta 0: no reference
    copied = reference_model(grpo, model)
    assert copied is not model and torch.equal(copied.weight, model.weight) and not copied.weight.requires_grad


def test_the_reference_is_loaded_apart_only_under_zero3_when_one_is_needed():
    from trimpi.train.rl.trainer import reference_loaded_apart

    loads = []

    def load():
        loads.append(torch.nn.Linear(2, 2))
        return loads[-1]

    model, zero3 = torch.nn.Linear(2, 2), plugin_accelerator(ZERO3)
    grpo, dapo = RLConfig(algo="grpo"), RLConfig(algo="dapo")
    assert reference_loaded_apart(grpo, model, make_accelerator(), load) is None
    assert reference_loaded_apart(dapo, model, zero3, load) is None
    lora = apply_lora(build_tiny("idefics3", seed=0)[0], rank=2)
    assert reference_loaded_apart(grpo, lora, zero3, load) is None  # the adapter-disabled policy is the reference
    assert loads == []
    ref = reference_loaded_apart(grpo, model, zero3, load)
    assert loads == [ref] and not ref.training and not any(p.requires_grad for p in ref.parameters())


@pytest.mark.parametrize("zero3", [False, True])
def test_rl_cli_sizes_the_model_from_its_config_and_loads_the_reference_apart(zero3, rl_data, tmp_path, monkeypatch):
    """Under zero3_init_flag the CLI's model loads partitioned (placeholders here): the default learning rate
    follows the size in its config, and the reference (beta > 0) is a second load, frozen."""
    from typer.testing import CliRunner

    from trimpi.cli import app
    from trimpi.models import loading
    from trimpi.train.rl import config, trainer

    root, _ = rl_data
    model, processor = tiny_model()
    save_checkpoint(model, processor, tmp_path / "model")
    monkeypatch.setattr(config, "SMALL_MODEL_PARAMS", sum(p.numel() for p in model.parameters()))  # "large"
    deepspeed = {**ZERO3} if zero3 else {"zero_optimization": {"stage": 2}}
    accelerator = SimpleNamespace(device=torch.device("cpu"), is_main_process=True,
                                  **vars(plugin_accelerator(deepspeed)))
    monkeypatch.setattr(trainer, "make_accelerator", lambda report_to=None: accelerator)
    loaded, seen = [], {}
    load_model = loading.load_model

    def partitioned(*args, **kwargs):
        net, proc = load_model(*args, **kwargs)
        if zero3:  # only zero3_init_flag partitions weights as they load
            placeholders(net)
        loaded.append(net)
        return net, proc

    monkeypatch.setattr(loading, "load_model", partitioned)
    monkeypatch.setattr(trainer, "train_rl", lambda *a, **k: seen.update(cfg=a[0], net=a[1], **k) or {})
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    res = CliRunner().invoke(app, ["train", "rl", "--data", str(root), "--model", str(tmp_path / "model"), "--out",
                                   str(tmp_path / "out"), "--algo", "grpo", "--reward", "test_rl_trainer:vowels",
                                   "--trust-code", "test_rl_trainer:vowels", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].learning_rate == 1e-6  # under ZeRO-3 the placeholders' count (0) would have given 1e-4
    assert seen["net"] is loaded[0]
    if zero3:
        assert seen["ref_model"] is loaded[1] and len(loaded) == 2
        assert not seen["ref_model"].training and not any(p.requires_grad for p in seen["ref_model"].parameters())
    else:
        assert seen["ref_model"] is None and len(loaded) == 1  # train_rl copies the starting model itself


def test_pipeline_rl_step_loads_the_reference_apart_under_zero3(tmp_path, monkeypatch):
    from _fixtures_train import write_dataset
    from trimpi.models import loading
    from trimpi.pipeline import execute
    from trimpi.pipeline.execute import Context
    from trimpi.pipeline.steps import Step
    from trimpi.train.rl import trainer

    loaded, seen = [], {}

    def load_model(*args, **kwargs):
        loaded.append(torch.nn.Linear(2, 2))
        return loaded[-1], None

    accelerator = SimpleNamespace(device="cpu", **vars(plugin_accelerator(ZERO3)))
    monkeypatch.setattr(trainer, "make_accelerator", lambda: accelerator)
    monkeypatch.setattr(loading, "load_model", load_model)
    monkeypatch.setattr(trainer, "train_rl", lambda *a, **k: seen.update(net=a[1], **k) or {"step": 1})
    data = Step("data", {"source": "path", "path": str(write_dataset(tmp_path / "d", n=2))})
    step = Step("rl", {"algo": "grpo", "policy_rollout": True, "options": {}, "seed": 0},
                [Step("base", {"model": "some/model"}), data])
    step.dir(tmp_path).mkdir(parents=True)
    execute.run_rl_step(step, Context(out=tmp_path, progress=False))
    assert seen["net"] is loaded[0] and seen["ref_model"] is loaded[1] and not loaded[1].training
