"""Load any Hugging Face VLM (id or local path) or an embedded preset as (model, processor).

Hub ids behave as in transformers: downloaded on first use unless the user set HF_HUB_OFFLINE."""

from __future__ import annotations

import os
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

    local = _local_only(name)
    try:
        processor = AutoProcessor.from_pretrained(str(name), local_files_only=local)
        if hasattr(processor, "tokenizer") and hasattr(processor, "image_processor"):
            return processor
        raise ModelError(f"AutoProcessor gave a {type(processor).__name__}, not a multimodal processor")
    except Exception as first:  # noqa: BLE001 - any failure falls through to the known subclasses
        error: Exception = first
        try:
            model_type = AutoConfig.from_pretrained(str(name), local_files_only=local).model_type
        except Exception:  # noqa: BLE001
            model_type = None
        if model_type in NO_VIDEO_PROCESSORS:
            try:
                return NO_VIDEO_PROCESSORS[model_type]().from_pretrained(str(name), local_files_only=local)
            except Exception as e:  # noqa: BLE001
                error = e
        raise ModelError(f"{name}: cannot load the processor ({type(error).__name__}: {error})".splitlines()[0]) from None


def load_model(
    name: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    data: str | Path | None = None,
    texts: Iterable[str] | None = None,
    seed: int = 0,
):
    """(model, processor) from a preset name (`micro`, `smol`), a local directory or a Hugging Face id.

    Hub ids download on first use, as in transformers, unless HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE
    is set; anything that cannot be had raises a one-line ModelError (see `check_hub_id`). Presets
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
    if not path.exists():
        check_hub_id(str(name), fetch=True)
    local = _local_only(name)
    try:
        import_model_modules(str(name), local)
        model = AutoModelForImageTextToText.from_pretrained(str(name), dtype=dtype, local_files_only=local)
    except Exception as e:  # noqa: BLE001 - hub/IO/config errors, reported in one line
        where = "local directory" if path.exists() else "Hugging Face model"
        raise ModelError(f"{name}: cannot load as a {where} ({type(e).__name__}: {e})".splitlines()[0][:300]) from None
    return model, load_processor(name)


def import_model_modules(name: str, local: bool) -> None:
    """Import the modeling modules of the model and of its sub-models (vision, text) before from_pretrained.

    Under ZeRO-3, from_pretrained builds the model inside DeepSpeed's `zero.Init`, which wraps the
    `__init__` of every module class and, on exit, puts back the one it wrapped. A class first imported
    inside it is wrapped before a class decorator replaces its `__init__` (transformers' hub-kernel layers,
    e.g. LlamaAttention), so the decorator's `__init__` is lost on exit, and the next model loaded (RL's
    reference) fails in its first forward."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return
    config = AutoConfig.from_pretrained(name, local_files_only=local)
    if type(config) in AutoModelForImageTextToText._model_mapping:
        AutoModelForImageTextToText._model_mapping[type(config)]  # noqa: B018 - the lookup imports the module
    for key in getattr(config, "sub_configs", {}):
        sub = getattr(config, key, None)
        if sub is not None and type(sub) in AutoModel._model_mapping:
            AutoModel._model_mapping[type(sub)]  # noqa: B018


def offline_mode() -> bool:
    """Whether the user turned the hub off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE), read now."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return constants.HF_HUB_OFFLINE or any(v.strip().upper() in ("1", "ON", "YES", "TRUE") for v in flags)


def _local_only(name: str | Path) -> bool:
    return Path(name).exists() or offline_mode()


def check_hub_id(name: str, fetch: bool) -> None:
    """Raise a one-line ModelError unless `name` is a Hugging Face id that can be had.

    The id must be well formed. With `fetch` (not for a dry run, which touches nothing): offline,
    it must be in the local cache; online, its config.json is fetched (a few KB) so that an
    unknown, gated or unreachable repo fails here, in one line, before any weights download."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    not_local = f"{name}: not a preset ({', '.join(PRESETS)}) or a local model directory"
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelError(f"{not_local}, nor a valid Hugging Face id") from None
    if not fetch or _in_hf_cache(name):
        return
    if offline_mode():
        raise ModelError(f"{not_local}, and not in the local Hugging Face cache; downloads are off "
                         "(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set): unset it to download")
    try:
        _fetch_config(name)
    except Exception as e:  # noqa: BLE001 - classified into one line
        raise ModelError(f"{name}: {hub_error_reason(e)}") from None


def _in_hf_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds this repo's config.json (checked without any network access)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - malformed ids are simply not cached
        return False
    return isinstance(found, str)


def _fetch_config(name: str) -> None:
    from huggingface_hub import hf_hub_download

    hf_hub_download(name, "config.json")


def hub_error_reason(e: Exception) -> str:
    """Why a hub id could not be had, in words (for one-line errors)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, GatedRepoError):
        return "a gated Hugging Face repo: accept its terms on huggingface.co, then log in (`hf auth login`)"
    if isinstance(e, RepositoryNotFoundError):
        return "unknown Hugging Face id (no such repo, or a private one: log in with `hf auth login`)"
    if isinstance(e, RevisionNotFoundError):
        return "unknown revision of this Hugging Face repo"
    if isinstance(e, LocalEntryNotFoundError):
        return "cannot reach the Hugging Face hub, and the model is not in the local cache"
    if isinstance(e, EntryNotFoundError):
        return "this Hugging Face repo has no config.json (not a transformers model)"
    return f"cannot fetch from the Hugging Face hub ({type(e).__name__}: {e})".splitlines()[0][:300]


def save_checkpoint(model, processor, out: str | Path, state_dict: dict | None = None) -> Path:
    """save_pretrained the model and its processor into `out` (loadable with from_pretrained).

    state_dict: the weights to write instead of the model's own (e.g. gathered from ZeRO-3 shards)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state_dict)
    processor.save_pretrained(out)
    ordinary_modes(out)
    return out
