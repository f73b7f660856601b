"""Generation engines by name: the one place that knows every engine ("hf", "vllm").

Kept apart from `engine` (the interface and the HF engine) because the vLLM engines import
that interface: selecting them from there would make an import cycle.
"""

from __future__ import annotations

import dataclasses

from trimpi.errors import ConfigError
from trimpi.generation.engine import HFGenerateEngine

ENGINES = ("hf", "vllm")
# Model families vLLM (0.32) cannot run: they generate with the HF engine.
NOT_ON_VLLM = {"fast_vlm": "FastVLM (the micro base's family)"}


def build_engine(name: str, model, processor, batch_size: int = 16, vllm_options=None, seed: int = 0,
                 max_images: int | None = None):
    """The generation engine called `name`: "hf" (transformers generate on `model`, the default)
    or "vllm" (`trimpi.generation.vllm_engine`; vllm_options: its `VLLMOptions`). max_images: the most
    images one prompt will show (`trimpi.data.schema.most_prompt_images`); vLLM reserves room for that many."""
    if name == "hf":
        return HFGenerateEngine(model, processor, batch_size=batch_size)
    if name == "vllm":
        family = getattr(getattr(model, "config", None), "model_type", None)
        if family in NOT_ON_VLLM:
            raise ConfigError(f"engine vllm: vLLM does not run {NOT_ON_VLLM[family]} models; use engine: hf for this "
                              "model")
        from trimpi.generation.vllm_engine import VLLMEngine, VLLMOptions

        options = vllm_options or VLLMOptions()
        if max_images is not None:
            options = dataclasses.replace(options, max_images_per_prompt=max(1, max_images))
        if options.mode == "server":
            from trimpi.generation.vllm_server import VLLMServerEngine

            return VLLMServerEngine(model, processor, options, seed=seed)
        return VLLMEngine(model, processor, options, seed=seed)
    raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
