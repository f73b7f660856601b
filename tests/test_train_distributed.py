"""Training under DeepSpeed ZeRO-3, checked with fakes (DeepSpeed is not installed here): final
and checkpoint saves write the weights accelerate gathers, not the module's own placeholders,
and LoRA is merged from that gathered state. Without DeepSpeed the saved files are byte for byte
those of the plain save."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trimpi.models.loading import save_checkpoint
from trimpi.models.lora import apply_lora, merge_lora_state
from trimpi.models.tiny import build_tiny
from trimpi.train.distributed import save_trained
from trimpi.train.rl import checkpoint as ckpt
from trimpi.train.rl.trainer import make_accelerator


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
