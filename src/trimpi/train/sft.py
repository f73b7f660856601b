"""VM-CPT and SFT: one code path on transformers' Trainer, two loss masks.

    cpt   all_but_visual mask on [policy + images, query, reasoning, answer]; full parameters
    sft   completion mask on the target (reasoning + answer, or answer only for Direct SFT); LoRA

The loss is the token mean over every labelled token of the optimizer step (all micro-batches
and processes), so the update does not depend on how a step is split. LoRA is merged into the
saved checkpoint by default; the output directory is a plain `from_pretrained` checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from trimpi.errors import ConfigError
from trimpi.train.collate import Collator
from trimpi.train.logprobs import IGNORE_INDEX, token_logprobs
from trimpi.train.stage import CHECKPOINTS_DIR, check_checkpoint_weights, mark_finished, prepare_stage_dir

SMALL_MODEL_PARAMS = 300_000_000  # below this, CPU-friendly defaults apply


@dataclass
class StageOptions:
    """Options of a cpt / sft run; None means "the default for this stage and model size"."""

    data: str
    model: str
    out: str
    stage: str = "sft"  # cpt | sft
    target: str = "cot"  # cot | answer (sft: Direct SFT; cpt: the policy before query and answer, no traces)
    split: str | None = None
    epochs: float | None = None
    lr: float | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    lora_rank: int | None = None  # 0 = full fine-tuning
    merge_lora: bool = True
    max_steps: int = -1
    seed: int = 0
    save_steps: int = 50
    logging_steps: int = 1
    report_to: str = "none"
    padding_side: str = "right"
    gradient_checkpointing: bool = False
    limit: int | None = None
    overwrite: bool = False
    progress: bool = True


# Paper (SPEC §4) for real models; CPU-sized for small ones: (epochs, lr, batch, lora_rank).
DEFAULTS = {
    ("cpt", False): (5, 1e-5, 8, 0),
    ("sft", False): (5, 1e-4, 8, 8),
    ("cpt", True): (5, 1e-3, 4, 0),
    ("sft", True): (5, 1e-3, 4, 0),
}


def resolve(opts: StageOptions, n_params: int) -> StageOptions:
    """Fill unset options with the stage's defaults for a model of `n_params` parameters."""
    if opts.stage not in ("cpt", "sft"):
        raise ConfigError(f"stage must be cpt or sft, got {opts.stage!r}")
    if opts.target not in ("cot", "answer"):
        raise ConfigError(f"--target must be cot or answer, got {opts.target!r}")
    epochs, lr, batch, rank = DEFAULTS[(opts.stage, n_params < SMALL_MODEL_PARAMS)]
    out = dataclasses.replace(
        opts,
        epochs=opts.epochs if opts.epochs is not None else epochs,
        lr=opts.lr if opts.lr is not None else lr,
        batch_size=opts.batch_size or batch,
        lora_rank=opts.lora_rank if opts.lora_rank is not None else rank,
    )
    if out.batch_size < 1 or out.grad_accum < 1 or out.lr <= 0 or out.epochs <= 0 or out.lora_rank < 0:
        raise ConfigError("batch size, grad accum, lr and epochs must be positive; lora rank >= 0")
    return out


def masked_token_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Sum of next-token NLL over labelled tokens / labelled tokens in the whole optimizer step.

    Trainer passes `num_items_in_batch` (counted over labels[..., 1:] of every micro-batch and,
    with average_tokens_across_devices, every process); without it, the micro-batch's count.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    lp = token_logprobs(outputs.logits[:, :-1], targets)
    total = -(lp * mask).sum()
    denom = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp_min(1)
    return total / denom


def training_arguments(opts: StageOptions, checkpoints: Path):
    """transformers TrainingArguments for a stage: the mixed precision of the `accelerate launch` config when
    launched (DeepSpeed refuses a Trainer whose precision differs from its config's), else fp32 on CPU and
    bf16 on capable GPUs."""
    from transformers import TrainingArguments

    from trimpi.train.distributed import launch_precision

    cuda = torch.cuda.is_available()
    launched = launch_precision()
    bf16 = launched == "bf16" if launched is not None else cuda and torch.cuda.is_bf16_supported()
    # transformers 5 renamed gradient_checkpointing (the old name still works, with a FutureWarning)
    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                     else "gradient_checkpointing")
    return TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps,
        learning_rate=opts.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=opts.logging_steps,
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=1,
        report_to=[] if opts.report_to in ("none", "") else opts.report_to.split(","),
        seed=opts.seed,
        data_seed=opts.seed,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=launched == "fp16",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **{checkpointing: opts.gradient_checkpointing},
        ddp_find_unused_parameters=True,
        disable_tqdm=not opts.progress,
        save_only_model=False,
    )


def last_checkpoint(checkpoints: Path) -> str | None:
    """The newest complete Trainer checkpoint directory to resume from, if any.

    The Trainer writes a checkpoint in place and its trainer_state.json last: a run killed while
    saving leaves a newer directory without a readable one, and the older checkpoint (rotated out
    only after the new one is saved) is where to resume."""
    import json

    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    def complete(d: Path) -> bool:
        try:
            return isinstance(json.loads((d / TRAINER_STATE_NAME).read_text()), dict)
        except (OSError, ValueError):
            return False

    found = [d for d in checkpoints.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if d.name.rsplit("-", 1)[1].isdigit()]
    found = [d for d in found if d.is_dir() and complete(d)]
    return str(max(found, key=lambda d: int(d.name.rsplit("-", 1)[1]))) if found else None


def stage_trainer_class():
    """Trainer whose resume reloads full-model checkpoints through from_pretrained.

    transformers saves some families (Qwen-VL) under their original checkpoint key names; the
    stock resume path loads the raw file with strict=False and silently keeps fresh weights.
    """
    from transformers import Trainer

    class StageTrainer(Trainer):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            check_checkpoint_weights(resume_from_checkpoint)  # a damaged file: one line, not a traceback
            target = model if model is not None else self.model
            if hasattr(target, "peft_config") or not (Path(resume_from_checkpoint) / "config.json").is_file():
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=next(target.parameters()).dtype)
            target.load_state_dict(loaded.state_dict())
            return None

    return StageTrainer


def run_stage(opts: StageOptions, callbacks=(), model=None, processor=None, examples=None, mark: bool = True) -> dict:
    """Train one cpt/sft stage and save a merged checkpoint to `opts.out`; returns the summary.

    model/processor: an already loaded model (default: load `opts.model`); examples: ready
    chat examples (default: built from `opts.data` for the stage). mark: write the finished
    marker; a stage that runs this one inside (the warm-up) passes False and marks it itself.
    An unfinished `opts.out` resumes from its last checkpoint.
    """
    from trimpi.models.loading import load_model
    from trimpi.models.lora import apply_lora
    from trimpi.train.callbacks import MetricsJsonl, quiet_console
    from trimpi.train.distributed import save_trained
    from trimpi.train.examples import build_examples

    out = prepare_stage_dir(opts.out, opts.overwrite)
    if examples is None:
        examples = build_examples(opts.data, opts.stage, opts.target, opts.split, opts.limit)
    if model is None:
        model, processor = load_model(opts.model, dtype="float32" if not torch.cuda.is_available() else None,
                                      device="cpu", data=opts.data, seed=opts.seed)
    opts = resolve(opts, sum(p.numel() for p in model.parameters()))
    if opts.lora_rank:
        model = apply_lora(model, opts.lora_rank)
    mode = "all_but_visual" if opts.stage == "cpt" else "completion"
    collator = Collator(processor, mode, padding_side=opts.padding_side, config=model.config)
    checkpoints = out / CHECKPOINTS_DIR
    metrics = MetricsJsonl(out)
    trainer = stage_trainer_class()(
        model=model, args=training_arguments(opts, checkpoints), train_dataset=examples, data_collator=collator,
        processing_class=processor, compute_loss_func=masked_token_loss, callbacks=[metrics, *callbacks],
    )
    quiet_console(trainer, opts.progress)
    result = trainer.train(resume_from_checkpoint=last_checkpoint(checkpoints))
    summary = {"stage": opts.stage, "target": opts.target, "examples": len(examples),
               "global_step": trainer.state.global_step,
               "train_loss": metrics.train_loss(result.training_loss, trainer.state.global_step),
               "options": dataclasses.asdict(opts)}
    save_trained(trainer.accelerator, trainer.model_wrapped, processor, out, merge_lora=opts.merge_lora)
    if mark and trainer.is_world_process_zero():
        mark_finished(out, summary)
    trainer.accelerator.wait_for_everyone()
    return summary
