"""LoRA on the language model's linear layers (peft), and merging a LoRA model's state into its base model's."""

from __future__ import annotations

import torch

LANGUAGE_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Vision towers reuse these names (Qwen2.5-VL's MLP), so the match is restricted to the text tower.
TEXT_TOWER = r"(language_model|text_model)"


def lora_target_regex(projections=LANGUAGE_PROJECTIONS) -> str:
    return rf".*{TEXT_TOWER}.*\.({'|'.join(projections)})$"


def apply_lora(model, rank: int = 8, alpha: int | None = None, dropout: float = 0.05, init: bool = True):
    """Wrap `model` in a peft LoRA model on the text tower's attention and MLP projections.

    alpha defaults to 2 × rank. init=False draws a random B (non-zero update), for tests.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout, target_modules=lora_target_regex(),
        init_lora_weights=init, task_type=None,
    )
    return get_peft_model(model, config)


PEFT_PREFIX = "base_model.model."  # a PeftModel's state-dict keys: PEFT_PREFIX + the base model's


def merge_lora_state(model, state: dict, adapter: str = "default") -> dict:
    """The base model's state dict with each LoRA update merged in, computed from `state` (the full
    state dict of the peft `model`) as peft's merge_and_unload computes it from the live weights.

    Only `model`'s structure (LoRA layers, their scaling) is read, never its parameters: under
    ZeRO-3 they are empty placeholders and `state` is what accelerate gathered. Plain linear LoRA
    only (what `apply_lora` makes); anything else raises ValueError rather than merge wrongly.
    """
    from peft.tuners.lora import Linear as LoraLinear

    merged = {k.removeprefix(PEFT_PREFIX).replace(".base_layer.", "."): v
              for k, v in state.items() if ".lora_" not in k}
    done = set()
    for name, layer in model.named_modules():
        if not isinstance(layer, LoraLinear) or adapter not in layer.lora_A:
            continue
        if getattr(layer, "lora_variant", {}).get(adapter) or getattr(layer, "lora_bias", {}).get(adapter):
            raise ValueError(f"{name}: only plain linear LoRA can be merged from a gathered state (no DoRA, bias)")
        a_key, b_key = f"{name}.lora_A.{adapter}.weight", f"{name}.lora_B.{adapter}.weight"
        key = f"{name.removeprefix(PEFT_PREFIX)}.weight"
        weight = merged[key]
        merged[key] = (weight + _lora_delta(state[a_key], state[b_key], layer.scaling[adapter], layer.fan_in_fan_out)
                       ).to(weight.dtype)
        done |= {a_key, b_key}
    left = [k for k in state
            if (".lora_" in k and k not in done) or ".modules_to_save." in k or ".original_module." in k]
    if left:
        raise ValueError(f"{left[0]}: only plain linear LoRA can be merged from a gathered state")
    return merged


def _lora_delta(a, b, scaling: float, fan_in_fan_out: bool):
    """peft's LoRA Linear.get_delta_weight on tensors: half-precision CPU weights are multiplied in fp32."""
    cast = b.device.type == "cpu" and b.dtype in (torch.float16, torch.bfloat16)
    delta = (b.float() @ a.float()) if cast else b @ a
    delta = (delta.T if fan_in_fan_out else delta) * scaling
    return delta.to(b.dtype) if cast else delta
