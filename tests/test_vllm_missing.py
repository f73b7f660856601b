"""Without vLLM installed, `--engine vllm` is one line saying how to install it; the HF engine is unaffected."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

from test_rl_fixtures import make_dataset
from trimpi.cli import app
from trimpi.errors import ConfigError
from trimpi.generation.registry import build_engine

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")


def test_build_engine_says_how_to_install():
    with pytest.raises(ConfigError) as e:
        build_engine("vllm", model=None, processor=None)
    assert "\n" not in str(e.value) and "make setup-vllm" in str(e.value)


@pytest.mark.parametrize("command", [["train", "rl", "--max-steps", "1"], ["eval"]])
def test_cli_fails_in_one_line_before_loading_a_model(tmp_path, command):
    data = make_dataset(tmp_path / "data", n=2)
    res = CliRunner().invoke(app, [*command, "--data", str(data), "--model", "no-such-model-dir",
                                   "--out", str(tmp_path / "out"), "--engine", "vllm"])
    assert isinstance(res.exception, ConfigError) and "make setup-vllm" in str(res.exception)


def test_unknown_engine_is_refused():
    with pytest.raises(ConfigError, match="--engine must be one of hf, vllm"):
        build_engine("sglang", model=None, processor=None)
