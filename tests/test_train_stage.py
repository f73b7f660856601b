"""A stage directory: a finished one is refused, or with overwrite emptied of everything the old run left."""

from __future__ import annotations

import pytest

from trimpi.errors import TrimpiError
from trimpi.train.stage import STAGE_MARKER, mark_finished, prepare_stage_dir


def finished_lora_run(out):
    """What a finished LoRA RL run leaves: merged model, adapter/, checkpoints, metrics, marker."""
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"old")
    (out / "adapter" / "adapter_config.json").write_text("{}")
    (out / "adapter_config.json").write_text("{}")  # an unmerged SFT run's adapter files sit in out itself
    (out / "model.safetensors").write_bytes(b"old")
    (out / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    mark_finished(out, {"global_step": 2})


def test_overwrite_removes_everything_the_finished_stage_left(tmp_path):
    out = tmp_path / "rl"
    finished_lora_run(out)
    with pytest.raises(TrimpiError, match="already holds a finished stage"):
        prepare_stage_dir(out, overwrite=False)
    assert (out / "adapter").is_dir()  # refused: nothing touched
    assert prepare_stage_dir(out, overwrite=True) == out
    assert out.is_dir() and list(out.iterdir()) == []


def test_an_unfinished_stage_is_kept_to_resume(tmp_path):
    out = tmp_path / "rl"
    finished_lora_run(out)
    (out / STAGE_MARKER).unlink()
    prepare_stage_dir(out, overwrite=True)
    assert (out / "adapter").is_dir() and (out / "checkpoints" / "checkpoint-2").is_dir()
