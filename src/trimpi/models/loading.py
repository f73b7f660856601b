"""Load any Hugging Face VLM (id or local path) or an embedded preset as (model, processor), offline."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from trimpi.data.io import ordinary_modes
from trimpi.errors import ModelError

PRESETS = ("micro", "micro-scratch", "smol")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are ~7x slower there), bf16 on GPUs that support it."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise ModelError(f"unknown dtype {dtype!r}; expected float32, bfloat16 or float16")
        return value
    return dtype


def load_processor(name: str | Path):
    """AutoProcessor, falling back to the no-video subclasses for Qwen-VL families."""
    from transformers import AutoConfig, AutoProcessor

    from trimpi.models.processors import NO_VIDEO_PROCESSORS

    try:
        processor = AutoProcessor.from_pretrained(str(name), local_files_only=True)
        if hasattr(processor, "tokenizer") and hasattr(processor, "image_processor"):
            return processor
        raise ModelError(f"AutoProcessor gave a {type(processor).__name__}, not a multimodal processor")
    except Exception as first:  # noqa: BLE001 - any failure falls through to the known subclasses
        try:
            model_type = AutoConfig.from_pretrained(str(name), local_files_only=True).model_type
        except Exception:  # noqa: BLE001
            model_type = None
        if model_type in NO_VIDEO_PROCESSORS:
            try:
                return NO_VIDEO_PROCESSORS[model_type]().from_pretrained(str(name), local_files_only=True)
            except Exception as e:  # noqa: BLE001
                first = e
        raise ModelError(f"{name}: cannot load the processor ({type(first).__name__}: {first})".splitlines()[0]) from None


def load_model(
    name: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    data: str | Path | None = None,
    texts: Iterable[str] | None = None,
    seed: int = 0,
):
    """(model, processor) from a preset name (`micro`, `smol`), a local directory or a cached HF id.

    Offline only: anything that cannot be found locally raises a one-line ModelError. Presets
    that train their tokenizer on the dataset's own text take `data` (a dataset directory) or
    `texts`. dtype defaults to fp32 on CPU and bf16 on capable GPUs.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = _resolve_dtype(dtype, device)
    if str(name) in PRESETS:
        from trimpi.models.presets import build_preset

        model, processor = build_preset(str(name), data=data, texts=texts, seed=seed)
    else:
        model, processor = _load_pretrained(name, dtype)
    return model.to(device=device, dtype=dtype), processor


def _load_pretrained(name: str | Path, dtype: torch.dtype):
    from transformers import AutoModelForImageTextToText

    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise ModelError(f"{name}: not a model directory (no config.json)")
    if not path.exists() and not _in_hf_cache(str(name)):
        raise ModelError(
            f"{name}: not a preset ({', '.join(PRESETS)}), a local model directory or a Hugging Face id in the local "
            "cache (downloads are disabled)"
        )
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(name), dtype=dtype, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - hub/IO/config errors all mean "not loadable offline"
        where = "local directory" if path.exists() else "preset, local directory or cached Hugging Face model"
        raise ModelError(
            f"{name}: cannot load offline as a {where} ({type(e).__name__}: {e})".splitlines()[0][:300]
        ) from None
    return model, load_processor(name)


def _in_hf_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds this repo's config.json (checked without any network access)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - malformed ids are simply not cached
        return False
    return isinstance(found, str)


def save_checkpoint(model, processor, out: str | Path) -> Path:
    """save_pretrained the model and its processor into `out` (loadable with from_pretrained)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    ordinary_modes(out)
    return out
