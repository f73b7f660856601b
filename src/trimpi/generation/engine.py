"""Generation engines (RL rollouts and evaluation).

The trainer only talks to `GenerationEngine`: given prompts, return `n` sampled completions
per prompt as token ids. `HFGenerateEngine` uses `model.generate` (KV cache, batched,
left-padded); `trimpi.generation.vllm_engine.VLLMEngine` implements the same two methods with
vLLM (loading new weights in `update_weights`) without any change to the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from trimpi.generation.prompts import Prompt, processor_inputs, to_model
from trimpi.models.processing import visual_token_ids


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled (TRL names)."""

    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filtering


@dataclass
class Completion:
    """One sampled completion: token ids (ending with EOS unless truncated) and decoded text."""

    token_ids: list[int]
    text: str
    truncated: bool  # stopped by max_completion_length before an EOS
    logprobs: list[float] | None = None  # per-token log-probs under the sampling distribution, when the engine gives them


class GenerationEngine(Protocol):
    def generate(self, prompts: list[Prompt], n: int, params: SamplingParams) -> list[list[Completion]]:
        """n completions for each prompt: result[i][j] is the j-th sample of prompts[i].

        Completions must not contain the model's visual placeholder tokens (the scoring
        forward would expect image features for them)."""
        ...

    def update_weights(self, model) -> None:
        """Make the engine sample from the current policy weights (no-op when it shares them: such an
        engine sets `shares_weights = True`, and is then not handed gathered ZeRO-3 weights)."""
        ...

    def close(self) -> None:
        """Release what the engine holds (processes, memory, files); a no-op when it holds nothing."""
        ...


def split_completion(ids: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Cut generated ids after the first EOS (kept). Returns (ids, truncated)."""
    for k, tok in enumerate(ids):
        if tok in eos_ids:
            return ids[: k + 1], False
    return ids, True


class HFGenerateEngine:
    """Sampling with transformers' `generate` on the training model itself (shared weights).

    synced_gpus: every process generates in step with the others, as ZeRO-3 needs (each forward
    gathers parameter shards from all processes); False leaves it to transformers."""

    shares_weights = True

    def __init__(self, model, processor, batch_size: int = 16, synced_gpus: bool = False):
        self.model = model
        self.processor = processor
        self.batch_size = batch_size  # prompts per generate() call
        self.synced_gpus = synced_gpus
        tok = getattr(processor, "tokenizer", processor)
        self.tokenizer = tok
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tok.eos_token_id is not None:
            eos.append(tok.eos_token_id)
        self.eos_ids = set(eos)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else next(iter(self.eos_ids))
        self.suppress = visual_token_ids(processor, getattr(model, "config", None))

    def update_weights(self, model) -> None:
        self.model = model

    def close(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], n: int, params: SamplingParams) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                inputs = to_model(processor_inputs(self.processor, chunk, padding_side="left"), self.model)
                seqs = self.model.generate(
                    **inputs,
                    do_sample=True,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    top_k=params.top_k,
                    max_new_tokens=params.max_completion_length,
                    num_return_sequences=n,
                    eos_token_id=sorted(self.eos_ids),
                    pad_token_id=self.pad_id,
                    suppress_tokens=self.suppress or None,
                    use_cache=True,
                    synced_gpus=self.synced_gpus or None,  # None: transformers' own default
                )
                gen = seqs[:, inputs["input_ids"].shape[1] :].tolist()
                for i in range(len(chunk)):
                    group = []
                    for ids in gen[i * n : (i + 1) * n]:
                        ids, truncated = split_completion(ids, self.eos_ids)
                        text = self.tokenizer.decode(ids, skip_special_tokens=True)
                        group.append(Completion(token_ids=ids, text=text, truncated=truncated))
                    out.append(group)
        finally:
            self.model.train(was_training)
        return out
