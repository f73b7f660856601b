"""`trimpi train warmup|cpt|sft|rl`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trimpi.cli.rl import rl
from trimpi.errors import ConfigError

app = typer.Typer(
    help="Training stages: perception warm-up, VM-CPT, SFT and RL.", no_args_is_help=True, rich_markup_mode=None
)
app.command("rl")(rl)

Data = Annotated[Path, typer.Option(help="Dataset directory (train.jsonl, train_cot.jsonl, policies/).")]
Out = Annotated[Path, typer.Option(help="Output checkpoint directory (from_pretrained-loadable).")]
Model = Annotated[str, typer.Option(help="Preset (micro, smol), local checkpoint or cached Hugging Face id.")]
Epochs = Annotated[float | None, typer.Option(help="Epochs (default: 5, the paper's).")]
Lr = Annotated[float | None, typer.Option(help="Learning rate (default: paper's for real models, larger for presets).")]
Batch = Annotated[int | None, typer.Option(help="Per-process micro-batch size.")]
Accum = Annotated[int, typer.Option(help="Gradient accumulation steps.")]
Rank = Annotated[int | None, typer.Option(help="LoRA rank; 0 = full fine-tuning (default: stage and model size).")]
MaxSteps = Annotated[int, typer.Option(help="Stop after this many optimizer steps (-1: run all epochs).")]
Seed = Annotated[int, typer.Option(help="Random seed.")]
SaveSteps = Annotated[int, typer.Option(help="Checkpoint every N steps (a rerun resumes from the last one).")]
ReportTo = Annotated[str, typer.Option(help="none, tensorboard, wandb (comma-separated), as in TrainingArguments.")]
Merge = Annotated[bool, typer.Option(help="Merge LoRA into the saved checkpoint.")]
Overwrite = Annotated[bool, typer.Option(help="Train again over a finished output directory.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]


def check_counts(batch_size: int | None, limit: int | None, max_steps: int) -> None:
    """Counts that would otherwise mean something surprising (`--batch-size 0` the default, `--limit 0` every
    record, `--max-steps 0` or -5 every epoch): one line each."""
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit: must be at least 1, got {limit}")
    if max_steps == 0 or max_steps < -1:
        raise ConfigError(f"--max-steps: must be at least 1, or -1 to run every epoch, got {max_steps}")


def _stage(stage: str, target: str, data, model, out, epochs, lr, batch_size, grad_accum, lora_rank, max_steps, seed,
           save_steps, report_to, merge_lora, overwrite, split, limit, progress) -> None:
    from trimpi.cli.safety import local_inputs, main_process
    from trimpi.data.io import owned_output
    from trimpi.train.sft import StageOptions, run_stage

    check_counts(batch_size, limit, max_steps)
    opts = StageOptions(data=str(data), model=model, out=str(out), stage=stage, target=target, split=split,
                        epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, lora_rank=lora_rank,
                        merge_lora=merge_lora, max_steps=max_steps, seed=seed, save_steps=save_steps,
                        report_to=report_to, limit=limit, overwrite=overwrite, progress=progress)
    inputs = local_inputs(data=data, model=model)
    with owned_output(out, f"train {stage}", overwrite, inputs, lock=main_process()):
        summary = run_stage(opts)
    typer.echo(f"{stage}: {summary['global_step']} steps, train loss {summary['train_loss']:.4f} → {out}")


@app.command("cpt")
def cpt(
    data: Data, out: Out, model: Model = "micro", epochs: Epochs = None, lr: Lr = None, batch_size: Batch = None,
    grad_accum: Accum = 1, lora_rank: Rank = None, max_steps: MaxSteps = -1, seed: Seed = 0,
    save_steps: SaveSteps = 50, report_to: ReportTo = "none", merge_lora: Merge = True, overwrite: Overwrite = False,
    split: Annotated[str | None, typer.Option(help="JSONL split to read (default: train_cot).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    progress: Progress = True,
) -> None:
    """VM-CPT: loss on every non-visual token of [policy, images, query, reasoning, answer]."""
    _stage("cpt", "cot", data, model, out, epochs, lr, batch_size, grad_accum, lora_rank, max_steps, seed,
           save_steps, report_to, merge_lora, overwrite, split, limit, progress)


@app.command("sft")
def sft(
    data: Data, out: Out, model: Model = "micro",
    target: Annotated[str, typer.Option(help="cot (reasoning + answer) or answer (Direct SFT).")] = "cot",
    epochs: Epochs = None, lr: Lr = None, batch_size: Batch = None, grad_accum: Accum = 1, lora_rank: Rank = None,
    max_steps: MaxSteps = -1, seed: Seed = 0, save_steps: SaveSteps = 50, report_to: ReportTo = "none",
    merge_lora: Merge = True, overwrite: Overwrite = False,
    split: Annotated[str | None, typer.Option(help="JSONL split (default: train_cot for cot, train for answer).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    progress: Progress = True,
) -> None:
    """SFT without the policy in the prompt: loss on the assistant target only."""
    _stage("sft", target, data, model, out, epochs, lr, batch_size, grad_accum, lora_rank, max_steps, seed,
           save_steps, report_to, merge_lora, overwrite, split, limit, progress)


@app.command("warmup")
def warmup(
    data: Data, out: Out, model: Model = "micro",
    epochs: Annotated[float, typer.Option(help="Epochs over the dataset's distinct scenes.")] = 30,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-3,
    batch_size: Annotated[int, typer.Option(help="Micro-batch size.")] = 16,
    grad_accum: Accum = 1, max_steps: MaxSteps = -1, seed: Seed = 0, save_steps: SaveSteps = 200,
    eval_scenes: Annotated[int, typer.Option(help="Held-out test scenes for attribute accuracy.")] = 100,
    report_to: ReportTo = "none", overwrite: Overwrite = False,
    questions: Annotated[int, typer.Option(
        help="Whole-image questions per scene (count, colors, shapes, ...) mixed with the captions.")] = 0,
    vision_first_steps: Annotated[int, typer.Option(
        help="First optimizer steps in which only the vision tower and connector train.")] = 0,
    existence: Annotated[int, typer.Option(
        help="Yes/no existence questions per scene, worded like policy conditions.")] = 0,
    captions: Annotated[bool, typer.Option(help="Train on scene captions (--no-captions: questions only).")] = True,
    vision_steps: Annotated[int, typer.Option(
        help="Vision pre-training steps (existence labels from scene graphs) before captioning.")] = 0,
    vision_lr: Annotated[float, typer.Option(help="Vision pre-training learning rate.")] = 1e-3,
    vision_batch_size: Annotated[int, typer.Option(help="Vision pre-training batch size (images).")] = 32,
    progress: Progress = True,
) -> None:
    """Perception warm-up: caption scene graphs so a fresh vision tower names object attributes."""
    from trimpi.cli.safety import local_inputs, main_process
    from trimpi.data.io import owned_output
    from trimpi.train.stage import ATTRIBUTE_ACCURACY
    from trimpi.train.warmup import WarmupOptions, run_warmup

    check_counts(batch_size, None, max_steps)
    claim = owned_output(out, "train warmup", overwrite, local_inputs(data=data, model=model), lock=main_process())
    with claim:
        summary = run_warmup(WarmupOptions(data=str(data), out=str(out), model=model, epochs=epochs, lr=lr,
                                           batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps, seed=seed,
                                           eval_scenes=eval_scenes, save_steps=save_steps, report_to=report_to,
                                           overwrite=overwrite, questions=questions,
                                           vision_first_steps=vision_first_steps, vision_steps=vision_steps,
                                           vision_lr=vision_lr, vision_batch_size=vision_batch_size,
                                           existence=existence, captions=captions, progress=progress))
    acc = summary.get(ATTRIBUTE_ACCURACY)
    typer.echo(f"warmup: {summary['global_step']} steps → {out}" + (f"; attribute accuracy {acc}" if acc else ""))
