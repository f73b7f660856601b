"""Hub behaviour: ids download unless the user turned the hub off; every failure is one line saying why;
a dry run touches no weights. No test here reaches the network (`_fetch_config` is replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from trimpi.cli import offline_env
from trimpi.errors import ConfigError, ModelError
from trimpi.models import loading
from trimpi.pipeline import load_recipe, run_recipe

PAPER = Path(__file__).parent.parent / "configs" / "paper" / "qwen2.5-vl-7b-clevr-t-d6.yaml"


def _online(monkeypatch, raises: Exception | None = None) -> list[str]:
    """Hub on; config fetches are recorded (and raise `raises`) instead of touching the network."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    fetched: list[str] = []

    def fetch(name: str) -> None:
        fetched.append(name)
        if raises is not None:
            raise raises

    monkeypatch.setattr(loading, "_fetch_config", fetch)
    return fetched


def _hub_error(cls, message: str):
    e = cls.__new__(cls)  # hub errors want an HTTP response; the class is what is classified
    Exception.__init__(e, message)
    return e


def test_offline_and_not_cached_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        loading.load_model("no-such-org/no-such-model")
    msg = str(e.value)
    assert "\n" not in msg and "not in the local Hugging Face cache" in msg and "HF_HUB_OFFLINE" in msg


def test_malformed_id_is_not_a_hub_id(monkeypatch):
    _online(monkeypatch)
    with pytest.raises(ModelError, match="nor a valid Hugging Face id"):
        loading.load_model("not//a valid id")


@pytest.mark.parametrize("error, words", [
    (_hub_error(RepositoryNotFoundError, "404"), "unknown Hugging Face id"),
    (_hub_error(GatedRepoError, "403"), "gated"),
    (LocalEntryNotFoundError("no connection"), "cannot reach the Hugging Face hub"),
])
def test_online_failures_are_classified(monkeypatch, error, words):
    fetched = _online(monkeypatch, error)
    with pytest.raises(ModelError) as e:
        loading.load_model("some-org/some-model")
    assert fetched == ["some-org/some-model"]
    assert words in str(e.value) and "\n" not in str(e.value)


def test_online_id_is_fetched_not_refused(monkeypatch):
    """With the hub on, an uncached id goes to the hub (here: a fake fetch, then the load fails on
    the missing files, still in one line) instead of being refused as 'not cached'."""
    fetched = _online(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(loading, "_local_only", lambda name: True)  # no download of the weights themselves
    with pytest.raises(ModelError) as e:
        loading.load_model("some-org/some-model")
    assert fetched == ["some-org/some-model"] and "cannot load as a Hugging Face model" in str(e.value)


def test_dry_run_offline_and_uncached_says_so_in_one_line(monkeypatch, tmp_path):
    """The plan sizes the model from its config.json; offline and not cached, a dry run still shows the plan
    after a one-line note (defaults of a large model), and a real run stops with that line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines: list[str] = []
    record = run_recipe(load_recipe(PAPER), tmp_path / "run", dry_run=True, echo=lines.append)
    assert lines[0].startswith("note: ") and "not in the local Hugging Face cache" in lines[0]
    assert len(lines) == 1 + len(record["steps"])
    with pytest.raises(ConfigError) as e:
        run_recipe(load_recipe(PAPER), tmp_path / "run", echo=lambda line: None)
    assert "not in the local Hugging Face cache" in str(e.value) and "\n" not in str(e.value)


def test_dry_run_online_reads_the_config_and_never_the_weights(monkeypatch, tmp_path):
    import transformers

    from trimpi.models.tiny import build_tiny
    from trimpi.pipeline import options

    fetched = _online(monkeypatch)
    config = build_tiny("qwen2_5_vl")[0].config
    asked = []
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda name, **kw: asked.append(kw) or config)

    def no_weights(*args, **kwargs):
        raise AssertionError("a dry run loaded weights")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", no_weights)
    options.model_parameters.cache_clear()
    try:
        lines: list[str] = []
        record = run_recipe(load_recipe(PAPER), tmp_path / "run", dry_run=True, echo=lines.append)
    finally:
        options.model_parameters.cache_clear()
    assert fetched == ["Qwen/Qwen2.5-VL-7B-Instruct"] and asked == [{"local_files_only": False}]
    assert record["steps"] and not (tmp_path / "run").exists()


def test_only_the_demo_forces_offline():
    assert offline_env(["demo", "--out", "x"])["HF_HUB_OFFLINE"] == "1"
    assert offline_env(["train", "rl", "--model", "Qwen/Qwen2.5-VL-7B-Instruct"]) == {}
