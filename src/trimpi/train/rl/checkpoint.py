"""RL checkpoints: save_pretrained weights + everything needed for an exact resume.

Layout of `OUT/checkpoints/checkpoint-STEP/` (the stage layout of `trimpi.train.stage`):
    config.json, model.safetensors ...  the model (from_pretrained-loadable; adapter files under LoRA)
    processor / tokenizer files
    optimizer.pt, scheduler.pt          optimizer and LR scheduler state
    deepspeed/                          under DeepSpeed, instead of optimizer.pt: the engine's own
                                        checkpoint (every process's ZeRO partition of the optimizer)
    trainer_state.json                  step, RL config, the starting checkpoint
    rank-R.pt                           per process: data position and RNG states
A checkpoint is written to a temporary directory and renamed, so a killed run never leaves
a half-written one behind. Every .pt file trimpi writes holds only tensors, numbers, strings, lists
and dicts (RNG states included), and is read with `torch.load(weights_only=True)`: resuming from a
checkpoint someone else made cannot run code. Under ZeRO each process holds only its partition of
the optimizer state, so `optimizer.state_dict()` on one process is not the run's; the engine's
`save_checkpoint` / `load_checkpoint` (what the Hugging Face Trainer uses under DeepSpeed) write and
read every partition, with DeepSpeed's own loader.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from trimpi.data.io import ordinary_modes, read_json, write_json
from trimpi.errors import TrimpiError
from trimpi.train.distributed import deepspeed_config, save_trained
from trimpi.train.stage import CHECKPOINTS_DIR, check_checkpoint_weights

_CKPT = re.compile(r"^checkpoint-(\d+)$")
DEEPSPEED_DIR, DEEPSPEED_TAG = "deepspeed", "state"


def checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints of the stage directory `out`, oldest first."""
    root = Path(out) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(out: str | Path, resume: str | None) -> Path | None:
    """`resume` = a checkpoint path, "last" (latest in out; None if there is none) or None."""
    if not resume:
        return None
    if resume == "last":
        found = checkpoints(out)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise TrimpiError(f"{path}: not an RL checkpoint (no trainer_state.json)")
    return path


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) RNG states as tensors, lists and numbers only."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_plain(path: Path):
    """torch.load of a file that may hold only tensors and plain containers (weights_only=True)."""
    import pickle

    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrimpiError(f"{path}: not a plain-tensor checkpoint file, refusing to load it ({first})") from None


def save(
    accelerator, out: Path, step: int, model, processor, optimizer, scheduler, state: dict, rank_state: dict,
    total_limit: int = 0,
) -> Path:
    """Write checkpoint-STEP (collective: call on every process)."""
    final = out / CHECKPOINTS_DIR / f"checkpoint-{step}"
    tmp = out / CHECKPOINTS_DIR / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    save_trained(accelerator, model, processor, tmp, merge_lora=False)
    deepspeed = deepspeed_config(accelerator) is not None
    if accelerator.is_main_process:
        if not deepspeed:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        write_json(tmp / "trainer_state.json", {**state, "step": step})
    accelerator.wait_for_everyone()
    if deepspeed:  # collective: each process writes its partition
        model.save_checkpoint(str(tmp / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        accelerator.wait_for_everyone()
    torch.save({**rank_state, "rng": rng_state()}, tmp / f"rank-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ordinary_modes(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if total_limit > 0:
            for old in checkpoints(out)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_weights(model, path: Path) -> None:
    from safetensors.torch import load_file

    check_checkpoint_weights(path)  # a damaged file: one line, not a traceback

    if (path / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
        return
    if not any(path.glob("model*.safetensors")):
        raise TrimpiError(f"{path}: no model*.safetensors to resume from")
    # Through from_pretrained: save_pretrained may rename keys (Qwen-VL), from_pretrained maps them back.
    try:
        saved = type(model).from_pretrained(path, dtype=next(model.parameters()).dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise TrimpiError(f"{path}: checkpoint weights cannot be loaded ({str(e).splitlines()[0]})") from None
    missing, unexpected = model.load_state_dict(saved.state_dict(), strict=False)
    del saved
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and "lm_head" not in k]
    if unexpected or missing:
        raise TrimpiError(f"{path}: checkpoint does not match the model ({len(missing)} missing, {len(unexpected)} unexpected keys)")


def load(accelerator, path: Path, model, optimizer, scheduler) -> tuple[dict, dict]:
    """Restore weights, optimizer, scheduler and this process's RNG. Returns (state, rank_state)."""
    saved_by_deepspeed = (path / DEEPSPEED_DIR).is_dir()
    if saved_by_deepspeed != (deepspeed_config(accelerator) is not None):
        raise TrimpiError(f"{path}: saved {'with' if saved_by_deepspeed else 'without'} DeepSpeed; resume it under "
                          "the same accelerate config it was made with")
    if saved_by_deepspeed:  # collective: weights and every process's optimizer partition
        loaded, _ = model.load_checkpoint(str(path / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=False)
        if loaded is None:
            raise TrimpiError(f"{path / DEEPSPEED_DIR}: DeepSpeed could not load this checkpoint")
    else:
        _load_weights(accelerator.unwrap_model(model), path)
        optimizer.load_state_dict(load_plain(path / "optimizer.pt"))
    scheduler.load_state_dict(load_plain(path / "scheduler.pt"))
    state = read_json(path / "trainer_state.json")
    rank_file = path / f"rank-{accelerator.process_index}.pt"
    if not rank_file.is_file():
        raise TrimpiError(f"{rank_file}: missing (resume with the same number of processes)")
    rank_state = load_plain(rank_file)
    set_rng_state(rank_state.pop("rng"))
    return state, rank_state


def save_final(accelerator, model, processor, out: Path) -> None:
    """The trained model in `out`, loadable with from_pretrained (collective: call on every process).
    Under LoRA the adapter is kept in `out/adapter` and the saved model is the merged one."""
    save_trained(accelerator, model, processor, out, merge_lora=True, adapter=out / "adapter")
