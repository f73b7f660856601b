"""Server mode (run in .venv-vllm by `make test-vllm`): a `vllm serve` child on 127.0.0.1 samples
what HF samples, returns the trainer's log-probs, takes weight syncs through /dev/shm, and is
gone after close()."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` runs this in .venv-vllm")

from _vllm_fixtures import GREEDY, OPTIONS, assert_greedy_agree, hf_greedy, max_logprob_gap, prompts, tiny  # noqa: E402
from test_rl_fixtures import make_dataset  # noqa: E402
from trimpi.generation.engine import SamplingParams  # noqa: E402
from trimpi.generation.registry import build_engine


def assert_key_guards_every_path(engine) -> None:
    """Without the run's key (or with another) the server refuses the development endpoints, /health and /v1."""
    import urllib.error
    import urllib.request

    for path, body in [("/collective_rpc", b'{"method": "reload_weights", "kwargs": {"weights_path": "/tmp"}}'),
                       ("/reset_prefix_cache", b"{}"), ("/health", None), ("/v1/models", None)]:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            req = urllib.request.Request(engine.url + path, data=body, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(req, timeout=10)
            assert info.value.code == 401, path
    ok = urllib.request.Request(engine.url + "/health", headers={"Authorization": f"Bearer {engine.api_key}"})
    with urllib.request.urlopen(ok, timeout=10) as r:
        assert r.status == 200
    assert engine.api_key not in (engine.workdir / "server.pid").read_text()


@pytest.mark.slow  # a second process that imports vLLM and starts a server: minutes on 2 cores (make test-vllm-slow)
def test_server_engine(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", n=2, with_policy_image=True)
    model, processor = tiny("idefics3")
    engine = build_engine("vllm", model, processor, vllm_options=dataclasses.replace(OPTIONS, mode="server"))
    try:
        assert engine.url.startswith("http://127.0.0.1:")
        assert_key_guards_every_path(engine)
        batch = prompts(processor, root) + prompts(processor, root, policy=True)
        got = [g[0].token_ids for g in engine.generate(batch, 1, GREEDY)]
        assert_greedy_agree(model, processor, batch, got, [c.token_ids for c in hf_greedy(model, processor, batch)])

        monkeypatch.setattr(engine, "suppress", [])  # the trainer scores over the whole vocabulary
        torch.manual_seed(0)
        sample = SamplingParams(max_completion_length=8, temperature=0.8)
        groups = engine.generate(batch, 2, sample)
        assert [len(g) for g in groups] == [2] * len(batch)
        assert max_logprob_gap(model, processor, batch, groups, sample.temperature) < 2e-3

        changed = copy.deepcopy(model)
        with torch.no_grad():
            for p in changed.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        engine.update_weights(changed)
        groups = engine.generate(batch, 2, sample)
        assert max_logprob_gap(changed, processor, batch, groups, sample.temperature) < 2e-3
    finally:
        engine.close()
    assert engine.process.poll() is not None and not engine.workdir.exists()
