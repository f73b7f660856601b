"""The model files a colocated vLLM engine starts from (no vLLM needed): each process writes its own copy."""

from __future__ import annotations

import torch

from trimpi.generation.vllm_engine import write_model_files
from trimpi.models.tiny import build_tiny


def test_a_process_other_than_rank_0_still_writes_its_engines_model_files(tmp_path, monkeypatch):
    """transformers 5 writes save_pretrained files on torch.distributed rank 0 only; under DDP every process
    colocates its own engine, so rank 1 must get config and weights too (it got an empty folder before)."""
    from transformers.distributed import mixin

    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    model, processor = build_tiny("idefics3", seed=0)
    model.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / "config.json").exists()  # what rank 1's engine was given
    out = write_model_files(model, processor, tmp_path / "engine")
    assert (out / "config.json").is_file() and any(out.glob("*.safetensors"))
    assert "should_save_on_this_rank" not in vars(model)  # the model saves as before afterwards
    reloaded = type(model).from_pretrained(out).state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in model.state_dict().items())


def test_closing_an_engine_keeps_a_process_group_it_did_not_create(tmp_path, monkeypatch):
    """Under DDP vLLM joins the trainer's process group; its engine shutdown must then tear down only vLLM's own
    groups (its full cleanup destroys the default group: the trainer's next barrier would fail), while a group
    vLLM created itself is cleaned up in full."""
    import sys
    from types import ModuleType, SimpleNamespace

    from trimpi.generation.vllm_engine import VLLMEngine

    calls = []
    parallel_state = SimpleNamespace(cleanup_dist_env_and_memory=lambda: calls.append("full cleanup"),
                                     destroy_model_parallel=lambda: calls.append("model parallel only"))
    core = ModuleType("vllm.v1.engine.core")
    core.cleanup_dist_env_and_memory = parallel_state.cleanup_dist_env_and_memory
    modules = {name: ModuleType(name) for name in ("vllm", "vllm.distributed", "vllm.v1", "vllm.v1.engine")}
    modules["vllm.v1.engine.core"] = core
    modules["vllm.distributed"].parallel_state = parallel_state
    modules["vllm.v1.engine"].core = core
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    for owns in (False, True):
        engine = object.__new__(VLLMEngine)
        engine.owns_process_group, engine.workdir = owns, tmp_path / f"w{owns}"
        shutdown = SimpleNamespace(shutdown=lambda: core.cleanup_dist_env_and_memory())  # as EngineCore.shutdown
        engine.llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=shutdown))
        engine.close()
        calls.append("closed")
    assert calls == ["model parallel only", "closed", "full cleanup", "full cleanup", "closed"]
    assert core.cleanup_dist_env_and_memory is parallel_state.cleanup_dist_env_and_memory  # restored
