"""LoRA on the language model's linear layers (peft), and merging back into a plain model."""

from __future__ import annotations

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


def merge_lora(model):
    """A plain transformers model with the LoRA update merged into its weights (no-op if not peft)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
