"""What training does differently when `accelerate launch` runs it under DeepSpeed.

Under ZeRO-3 each process holds a shard of every parameter, and the module's own parameters
are empty placeholders. So a final model is saved from the state that `accelerator.get_state_dict`
gathers (every process calls it, the main one writes; LoRA is merged from that state), code that
reads whole weights runs inside `gathered_parameters`, and HF generate needs `synced_gpus` on
every process (`zero3_enabled`). A loop that prepares no dataloader fills DeepSpeed's "auto" batch
entries itself (`fill_deepspeed_auto`). A frozen model beside the trained one (RL's reference) gets
an engine of its own (`prepare_frozen`). Without DeepSpeed each of these is what plain code does.

Every forward under ZeRO-3 is a collective (each layer's parameters are gathered from all
processes), and so is every backward under ZeRO-2/3 (gradients are reduced in it): processes must
run the same number of them, so a loop whose processes hold different amounts of data agrees on
counts first (`global_max`). Values are reduced over processes by `all_reduced`, on the device the
process group's backend takes (NCCL reduces only CUDA tensors).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

REDUCE_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}


def collective_device(backend: str) -> str:
    """The device of the tensors a process group with `backend` reduces: "cuda" for NCCL, else "cpu"."""
    return "cuda" if backend == "nccl" else "cpu"


def all_reduced(x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """`x` reduced over all processes (op: sum, min or max), on x's device; `x` itself when the run is
    not distributed. Collective: every process calls it, in the same order."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    y = x.to(collective_device(dist.get_backend()))
    dist.all_reduce(y, op=getattr(dist.ReduceOp, REDUCE_OPS[op]))
    return y.to(x.device)


def global_sum(value: float) -> float:
    """The sum of `value` over processes (collective)."""
    return float(all_reduced(torch.tensor([value], dtype=torch.float64)).item())


def global_max(value: int) -> int:
    """The largest `value` of any process (collective)."""
    return int(all_reduced(torch.tensor([value], dtype=torch.int64), "max").item())


def deepspeed_launched() -> bool:
    """Whether `accelerate launch` started this process with a DeepSpeed config (before any Accelerator exists)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def launch_precision() -> str | None:
    """The mixed precision `accelerate launch` was given ("no", "fp16", "bf16"); None outside a launch."""
    return os.environ.get("ACCELERATE_MIXED_PRECISION")


def trained_with() -> str | None:
    """How this process's trainer was distributed, from accelerate's state: "deepspeed-zero3",
    "multi_cpu", "no", ...; None when no trainer set that state up."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if not AcceleratorState._shared_state:
        return None
    state = AcceleratorState()
    if state.distributed_type == DistributedType.DEEPSPEED:
        return f"deepspeed-zero{state.deepspeed_plugin.zero_stage}"
    return str(state.distributed_type.value).lower()


def deepspeed_config(accelerator) -> dict | None:
    """The DeepSpeed config accelerate initialises the engine with; None without DeepSpeed."""
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    return None if plugin is None else plugin.deepspeed_config


def zero3_enabled(accelerator) -> bool:
    config = deepspeed_config(accelerator)
    return config is not None and config.get("zero_optimization", {}).get("stage") == 3


def fill_deepspeed_auto(accelerator, values: dict) -> None:
    """Set the DeepSpeed config's top-level entries in `values` that are "auto" or absent (before
    `prepare`); values the config gives are kept. No-op without DeepSpeed."""
    config = deepspeed_config(accelerator)
    if config is None:
        return
    for key, value in values.items():
        if config.get(key, "auto") == "auto":
            config[key] = value


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


def gathered_parameters(accelerator, model):
    """A context in which `model`'s parameters are whole on every process: DeepSpeed's
    GatheredParameters under ZeRO-3 (collective; changes made inside are dropped), else nothing."""
    if not zero3_enabled(accelerator):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))


def frozen_deepspeed_config(config: dict) -> dict:
    """The DeepSpeed config of a frozen model's engine: the trained model's (ZeRO stage, precision,
    batch entries as `prepare` filled them) without its optimizer and scheduler."""
    return {k: copy.deepcopy(v) for k, v in config.items() if k not in ("optimizer", "scheduler")}


def prepare_frozen(accelerator, model):
    """A frozen model (no optimizer) made ready beside the prepared one, after `prepare`. Under ZeRO-3
    its own DeepSpeed engine over its weights, which must have been loaded partitioned (a separate
    from_pretrained, as TRL does for its reference; a copy of a partitioned model holds only
    placeholders); its forwards are then collective. Otherwise the model moved to the device."""
    if model is None or not zero3_enabled(accelerator):
        return None if model is None else model.to(accelerator.device)
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, config=frozen_deepspeed_config(deepspeed_config(accelerator)))
    engine.eval()  # DeepSpeedEngine.eval returns None, unlike Module.eval
    return engine


@contextlib.contextmanager
def micro_step(accelerator, model, last: bool) -> Iterator[None]:
    """The forward/backward of one micro-batch of an optimizer step. Only the last synchronises
    gradients (DDP) and ends the step: DeepSpeed steps its optimizer inside `accelerator.backward`
    when `sync_gradients` is set, so it is cleared for the others."""
    accelerator.sync_gradients = last
    try:
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            yield
    finally:
        accelerator.sync_gradients = True
