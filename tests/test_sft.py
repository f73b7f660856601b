"""SFT / VM-CPT on tiny models: split-invariant gradients, LoRA merge, overfitting, resume, bad input."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import TrainerCallback

from tests._fixtures_train import write_dataset
from trimpi.errors import DataError, ModelError
from trimpi.models.lora import apply_lora
from trimpi.models.tiny import FAMILIES, build_tiny
from trimpi.train.callbacks import InterruptAt
from trimpi.train.collate import Collator
from trimpi.train.examples import build_examples
from trimpi.train.sft import StageOptions, masked_token_loss, run_stage
from trimpi.train.logprobs import model_inputs


def _grads(model, batches) -> torch.Tensor:
    """Flattened gradient of the step loss accumulated over micro-batches (Trainer's normalisation)."""
    model.zero_grad()
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    for b in batches:
        out = model(**model_inputs(b))
        masked_token_loss(out, b["labels"], num_items_in_batch=total).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_is_independent_of_micro_batch_split(family, train_data):
    model, processor = build_tiny(family)
    model.train()
    examples = build_examples(train_data, "cpt")
    coll = Collator(processor, "all_but_visual", config=model.config)
    whole = _grads(model, [coll(examples)])
    for size in (1,):  # 4 examples in 4 micro-batches vs one batch
        split = _grads(model, [coll(examples[i:i + size]) for i in range(0, len(examples), size)])
        assert torch.allclose(whole, split, atol=1e-6, rtol=1e-4), (family, size)


def _trainer_step(processor, model_state, family, train_data, batch, accum):
    """Parameters after one SGD step (lr 1, no clipping) through the real Trainer."""
    from transformers import Trainer

    from trimpi.train.sft import training_arguments

    model, _ = build_tiny(family)
    model.load_state_dict(model_state)
    opts = StageOptions(data=str(train_data), model="-", out="-", batch_size=batch, grad_accum=accum, lr=1.0, epochs=1,
                        max_steps=1, report_to="none")
    args = training_arguments(opts, train_data / f"ckpt-{batch}-{accum}")
    args.optim, args.max_grad_norm, args.lr_scheduler_type, args.save_strategy = "sgd", 0.0, "constant", "no"
    args.disable_tqdm = True
    trainer = Trainer(model=model, args=args, train_dataset=build_examples(train_data, "cpt"),
                      data_collator=Collator(processor, "all_but_visual", config=model.config),
                      compute_loss_func=masked_token_loss)
    trainer.train()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_trainer_update_is_independent_of_batch_and_accumulation(train_data):
    model, processor = build_tiny("idefics3")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = _trainer_step(processor, state, "idefics3", train_data, 4, 1)
    for batch, accum in ((1, 4),):
        assert torch.allclose(ref, _trainer_step(processor, state, "idefics3", train_data, batch, accum), atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_merged_checkpoint_matches_adapter_model(family, train_data, tmp_path):
    from accelerate import Accelerator

    from trimpi.models import load_model
    from trimpi.train.distributed import save_trained

    model, processor = build_tiny(family)
    torch.manual_seed(1)
    peft_model = apply_lora(model, rank=4, init=False).eval()
    batch = Collator(processor, "all_but_visual", config=model.config)(build_examples(train_data, "cpt")[:2])
    with torch.no_grad():
        adapter = peft_model(**model_inputs(batch)).logits
        save_trained(Accelerator(cpu=True), peft_model, processor, tmp_path / "m")
        reloaded, _ = load_model(tmp_path / "m")
        out = reloaded.eval()(**model_inputs(batch)).logits
    assert not any("lora" in k for k in reloaded.state_dict())
    assert torch.allclose(adapter, out, atol=1e-5)


def test_tiny_model_overfits(train_data, tmp_path):
    model, processor = build_tiny("idefics3")
    s = run_stage(StageOptions(data=str(train_data), model="-", out=str(tmp_path / "o"), stage="sft", target="answer",
                               lr=1e-2, batch_size=4, max_steps=40, save_steps=1000, logging_steps=1, limit=4),
                  model=model, processor=processor)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert s["global_step"] == 40
    assert losses[0] / losses[-1] > 10, losses


class Snapshot(TrainerCallback):
    """Keeps the model weights seen when training (re)starts."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_continues_from_checkpoint(train_data, tmp_path):
    opts = StageOptions(data=str(train_data), model="-", out=str(tmp_path / "o"), stage="cpt", lr=1e-3, batch_size=2,
                        max_steps=6, save_steps=2)
    model, processor = build_tiny("qwen2_vl")
    with pytest.raises(KeyboardInterrupt):
        run_stage(opts, callbacks=[InterruptAt(3)], model=model, processor=processor)
    assert (tmp_path / "o" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "o" / "trimpi_stage.json").exists()
    shutil.copytree(tmp_path / "o" / "checkpoints" / "checkpoint-2", tmp_path / "ck2")
    model, processor = build_tiny("qwen2_vl", seed=5)  # different init: weights must come from the checkpoint
    snap = Snapshot()
    summary = run_stage(opts, callbacks=[snap], model=model, processor=processor)
    rows = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6], steps  # run 1 logged 1-2 (killed in step 3), run 2 went on from 3
    saved = type(model).from_pretrained(tmp_path / "ck2").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in snap.state.items())
    assert summary["global_step"] == 6


def test_bad_inputs_raise_one_line_errors(train_data, tmp_path):
    with pytest.raises(DataError, match="dataset directory not found"):
        build_examples(tmp_path / "missing", "sft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train_cot.jsonl: file not found"):
        build_examples(tmp_path / "empty", "cpt")
    bad = write_dataset(tmp_path / "bad", n=2)
    (bad / "images" / "img_0.png").write_bytes(b"not a png")
    model, processor = build_tiny("llava")
    with pytest.raises(DataError, match="cannot decode image"):
        Collator(processor, "completion")(build_examples(bad, "sft"))
    from trimpi.models import load_model

    with pytest.raises(ModelError, match="not a preset"):
        load_model("no-such-org/no-such-model")


def test_cli_reports_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trimpi", "train", "sft", "--data", str(tmp_path), "--out",
                           str(tmp_path / "o"), "--model", "no-such-org/no-such-model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "train_cot.jsonl" in lines[0]


def test_training_arguments_carry_checkpointing_without_a_deprecation_warning(tmp_path):
    import warnings

    from trimpi.train.sft import training_arguments

    for on in (True, False):
        opts = StageOptions(data="-", model="-", out="-", gradient_checkpointing=on, report_to="none")
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            args = training_arguments(opts, tmp_path / "ckpt")
        assert args.gradient_checkpointing is on


class KillAfterLog(TrainerCallback):
    """Raises once step `step`'s metrics are written: a kill between a log and the next checkpoint."""

    def __init__(self, step: int):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step >= self.step and "loss" in (logs or {}):
            raise KeyboardInterrupt(f"killed after logging step {state.global_step}")


def test_fault8_sft_resume_metrics_have_no_duplicate_steps(train_data, tmp_path):
    opts = StageOptions(data=str(train_data), model="-", out=str(tmp_path / "o"), stage="cpt", lr=1e-3, batch_size=2,
                        max_steps=6, save_steps=2, limit=4, progress=False)
    model, processor = build_tiny("idefics3")
    with pytest.raises(KeyboardInterrupt):
        run_stage(opts, callbacks=[KillAfterLog(3)], model=model, processor=processor)
    metrics = tmp_path / "o" / "metrics.jsonl"
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    model, processor = build_tiny("idefics3")
    summary = run_stage(opts, model=model, processor=processor)  # resumes from checkpoint-2
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert summary["train_loss"] == pytest.approx(sum(losses) / 6, rel=1e-5)  # the whole run, not steps 3-6


def test_fault8_trainer_metrics_stay_out_of_the_console(train_data, tmp_path, capsys):
    for progress in (True, False):
        model, processor = build_tiny("idefics3")
        run_stage(StageOptions(data=str(train_data), model="-", out=str(tmp_path / str(progress)), stage="cpt",
                               batch_size=2, max_steps=2, limit=4, progress=progress), model=model, processor=processor)
        captured = capsys.readouterr()
        assert "'loss'" not in captured.out + captured.err, progress
        assert (tmp_path / str(progress) / "metrics.jsonl").read_text().count('"loss"') == 2


@pytest.mark.parametrize(("launched", "bf16", "fp16"), [("bf16", True, False), ("fp16", False, True), ("no", False, False)])
def test_under_accelerate_launch_the_trainer_takes_the_configs_precision(tmp_path, monkeypatch, launched, bf16, fp16):
    """DeepSpeed refuses a Trainer whose precision differs from its config's (the paper's ZeRO configs: bf16)."""
    from trimpi.train.sft import StageOptions, training_arguments

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launched)
    opts = StageOptions(data=tmp_path, model="m", out=tmp_path)
    args = training_arguments(opts, tmp_path)
    assert (args.bf16, args.fp16) == (bf16, fp16)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert training_arguments(opts, tmp_path).bf16 == cuda_bf16  # not launched: bf16 on capable GPUs only
