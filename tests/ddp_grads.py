"""One RL update and one SFT optimizer step, under however many processes this is launched with.

`accelerate launch --num_processes 2 tests/ddp_grads.py DATA RL_DATA OUT` writes, from rank 0,
OUT/rl-2.pt (the DDP-synchronised gradient of one RL update per loss type) and OUT/sft-2.pt (the
parameters after one SGD step of the SFT Trainer); test_ddp_grads.py computes the same in one
process and compares. Each process takes its share of the same samples / examples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

RL_GROUPS = 4  # prompts, 3 samples each


def rl_gradients(rl_root: Path, share: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """loss type -> the flattened gradient of one policy update, after DDP's all-reduce.

    share: (rank, world) of the groups to take (default: this process's share)."""
    from test_rl_fixtures import tiny_model
    from test_rl_trainer import VOWELS

    from trimpi.data.schema import PolicyStore, load_records
    from trimpi.generation.engine import HFGenerateEngine, SamplingParams
    from trimpi.generation.prompts import PromptBuilder
    from trimpi.train.rl.config import RLConfig
    from trimpi.train.rl.core_algos import LOSS_TYPES
    from trimpi.train.rl.metrics import MetricSums
    from trimpi.train.rl.rollout import make_batch, sample_groups
    from trimpi.train.rl.trainer import make_accelerator
    from trimpi.train.rl.update import batch_logps, normalizer, policy_update

    acc = make_accelerator()
    model, proc = tiny_model()
    records = load_records(rl_root / "train.jsonl")[:RL_GROUPS]
    torch.manual_seed(1)  # every process samples the same groups, then keeps its share
    samples = sample_groups(HFGenerateEngine(model, proc), PromptBuilder(proc, rl_root), records,
                            list(range(RL_GROUPS)), 3, SamplingParams(max_completion_length=7), VOWELS,
                            PolicyStore(rl_root))
    rank, world = share or (acc.process_index, acc.num_processes)
    mine = [s for s in samples if s.group_id % world == rank]
    batch = make_batch(mine, "group", mask_truncated=False)
    pad = proc.tokenizer.pad_token_id
    batch.old_logps = batch_logps(model, proc, batch, 4, pad) - 0.3 * batch.mask  # ratio e^0.3: past the clip range
    batch.ref_logps = batch.old_logps - 0.05
    model = acc.prepare(model)
    grads = {}
    for loss_type in LOSS_TYPES:
        cfg = RLConfig(algo="grpo", beta=0.04, loss_type=loss_type, per_device_train_batch_size=2,
                       max_completion_length=7).resolved()
        model.zero_grad(set_to_none=True)
        norm = normalizer(batch, loss_type, 7, acc.num_processes)
        policy_update(acc, model, proc, batch, cfg, norm, pad, MetricSums())
        grads[loss_type] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return grads


def sft_step(data: Path, out: Path, per_device: int) -> torch.Tensor:
    """Flattened parameters after one SGD step (lr 1, no clipping) of the SFT Trainer on 4 examples."""
    from transformers import Trainer

    from trimpi.models.tiny import build_tiny
    from trimpi.train.collate import Collator
    from trimpi.train.examples import build_examples
    from trimpi.train.sft import StageOptions, masked_token_loss, training_arguments

    model, processor = build_tiny("idefics3")
    opts = StageOptions(data=str(data), model="-", out=str(out), batch_size=per_device, lr=1.0, epochs=1,
                        max_steps=1, report_to="none", progress=False)
    args = training_arguments(opts, out / "checkpoints")
    args.optim, args.max_grad_norm, args.lr_scheduler_type, args.save_strategy = "sgd", 0.0, "constant", "no"
    trainer = Trainer(model=model, args=args, train_dataset=build_examples(data, "sft", limit=4),
                      data_collator=Collator(processor, "completion", config=model.config),
                      compute_loss_func=masked_token_loss)
    trainer.train()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def main(data: Path, rl_root: Path, out: Path) -> None:
    from trimpi.train.rl.trainer import make_accelerator

    state = make_accelerator()  # first: a plain PartialState() on a machine without CUDA is not distributed
    assert state.num_processes == 2, "launch this with 2 processes"
    grads = rl_gradients(rl_root)
    params = sft_step(data, out / "sft-run", per_device=4 // state.num_processes)
    if state.is_main_process:
        torch.save(grads, out / f"rl-{state.num_processes}.pt")
        torch.save(params, out / f"sft-{state.num_processes}.pt")
    state.wait_for_everyone()


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:4]))
