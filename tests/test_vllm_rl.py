"""`trimpi train rl --engine vllm` (run in .venv-vllm by `make test-vllm`): a 2-step PoRo-GRPO run
whose rollouts vLLM samples gives the same losses as the HF-engine path trained on the same
samples, and at every step vLLM samples from the trainer's current weights."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` runs this in .venv-vllm")

from typer.testing import CliRunner  # noqa: E402

from _vllm_fixtures import OPTIONS, max_logprob_gap, tiny  # noqa: E402
from test_rl_fixtures import make_dataset  # noqa: E402
from trimpi.cli import app  # noqa: E402
from trimpi.generation.vllm_engine import VLLMEngine  # noqa: E402
from trimpi.models.loading import save_checkpoint  # noqa: E402
from trimpi.train.rl import trainer  # noqa: E402


class Recording:
    """Wraps the vLLM engine: keeps every rollout, and checks each against the policy it synced."""

    def __init__(self, engine, processor, temperature: float):
        self.engine, self.processor, self.temperature = engine, processor, temperature
        self.rollouts, self.gaps = [], []

    def update_weights(self, model):
        self.model = model
        self.engine.update_weights(model)

    def generate(self, prompts, n, params):
        groups = self.engine.generate(prompts, n, params)
        self.rollouts.append(groups)
        self.gaps.append(max_logprob_gap(self.model, self.processor, prompts, groups, self.temperature))
        return groups

    def close(self):
        self.engine.close()


class Replay:
    """The HF path's engine, handed the recorded samples instead of sampling its own."""

    def __init__(self, rollouts):
        self.rollouts = list(rollouts)

    def update_weights(self, model):
        pass

    def generate(self, prompts, n, params):
        return self.rollouts.pop(0)

    def close(self):
        pass


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_poro_grpo_with_vllm_gives_the_hf_engines_losses_on_the_same_samples(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", n=4, with_policy_image=True)
    model, processor = tiny("idefics3")
    save_checkpoint(model, processor, tmp_path / "model")
    args = ["train", "rl", "--data", str(data), "--model", str(tmp_path / "model"), "--policy-rollout",
            "--algo", "grpo", "--num-generations", "2", "--prompts-per-step", "2", "--max-steps", "2",
            "--max-completion-length", "8", "--temperature", "0.9", "--lr", "1e-2", "--no-progress",
            "--reward", "test_rl_trainer:vowels", "--trust-code", "test_rl_trainer:vowels"]
    recorded = {}

    def vllm_engine(cfg, policy, proc, **_):
        assert cfg.engine == "vllm" and cfg.vllm_mode == "colocate"
        engine = VLLMEngine(policy, proc, OPTIONS, seed=cfg.seed)  # as the trainer builds it, with a small KV cache
        engine.suppress = []  # the trainer scores over the whole vocabulary
        recorded["engine"] = Recording(engine, proc, cfg.temperature)
        return recorded["engine"]

    torch.manual_seed(0)
    monkeypatch.setattr(trainer, "rollout_engine", vllm_engine)
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "vllm"), "--engine", "vllm"])
    assert res.exit_code == 0, res.output
    rec = recorded["engine"]
    assert len(rec.rollouts) == 2 and max(rec.gaps) < 2e-3  # step 2 samples from the updated weights
    aware = [c for g in rec.rollouts[0][2:] for c in g]  # the policy-aware half (2 records after 2 plain)
    assert len(aware) == 4 and all(c.logprobs for c in aware)

    monkeypatch.setattr(trainer, "rollout_engine", lambda cfg, policy, proc, **_: Replay(rec.rollouts))
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "hf")])
    assert res.exit_code == 0, res.output
    vllm_losses, hf_losses = _losses(tmp_path / "vllm"), _losses(tmp_path / "hf")
    assert len(vllm_losses) == 2 and vllm_losses[0] != 0.0
    assert vllm_losses == pytest.approx(hf_losses, rel=1e-5, abs=1e-7)
