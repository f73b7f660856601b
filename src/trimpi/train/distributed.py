"""What training does differently when `accelerate launch` runs it under DeepSpeed.

Under ZeRO-3 each process holds a shard of every parameter, and the module's own parameters
are empty placeholders. So a final model is saved from the state that `accelerator.get_state_dict`
gathers (every process calls it, the main one writes; LoRA is merged from that state). Without
DeepSpeed that state is the module's own, and the saved files are those of a plain save_pretrained.
"""

from __future__ import annotations

from pathlib import Path


def save_trained(accelerator, model, processor, out: str | Path, merge_lora: bool = True,
                 adapter: str | Path | None = None) -> None:
    """Save the prepared `model` and `processor` into `out`, loadable with from_pretrained.

    Collective: every process calls it (ZeRO-3 gathers the shards); the main process writes.
    Under LoRA: the adapter alone into `adapter` when given, and into `out` the merged model
    (`merge_lora`) or else the adapter files.
    """
    from peft import PeftModel

    from trimpi.models.loading import save_checkpoint
    from trimpi.models.lora import merge_lora_state

    state = accelerator.get_state_dict(model)  # under ZeRO-3: the 16-bit weights on the main process, None elsewhere
    if not accelerator.is_main_process:
        return
    module = accelerator.unwrap_model(model)
    if isinstance(module, PeftModel):
        if adapter is not None:
            module.save_pretrained(adapter, state_dict=state)
        if merge_lora:
            module, state = module.get_base_model(), merge_lora_state(module, state)
    save_checkpoint(module, processor, out, state_dict=state)
