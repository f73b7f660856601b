"""The trust rule's promises, one test each: no pickle from run folders, keys only where the user sent them,
the dry run says what a recipe reaches, outputs are owned (see also the hostile-input suite)."""

from __future__ import annotations

import http.server
import json
import os
import pickle
import re
import threading
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


class Pwn:
    """A pickle that runs code when loaded (what a crafted checkpoint holds)."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def crafted(path: Path, sentinel: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "x": Pwn(sentinel)}, path)
    return path


def test_no_pickle_loading_left_in_the_package():
    found = []
    for path in SRC.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"weights_only\s*=\s*False|pickle\.loads?\(", line):
                found.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert found == []


def test_crafted_pickle_refused_by_rl_resume(tmp_path):
    from trimpi.errors import TrimpiError
    from trimpi.train.rl.checkpoint import load_plain

    path = crafted(tmp_path / "checkpoint-1" / "trainer_state.pt", tmp_path / "PWNED")
    with pytest.raises(TrimpiError, match="not a plain-tensor checkpoint file, refusing to load it"):
        load_plain(path)
    assert not (tmp_path / "PWNED").exists()


def test_crafted_pickle_refused_by_pretrain_resume_and_export(tmp_path):
    pretrain = pytest.importorskip("trimpi.train.pretrain.trainer")
    from trimpi.errors import TrimpiError

    path = crafted(tmp_path / "run" / "state.pt", tmp_path / "PWNED")
    with pytest.raises(TrimpiError, match="not a readable pretraining checkpoint"):
        pretrain.load_state(path)  # what resume and `trimpi pretrain export` read
    assert not (tmp_path / "PWNED").exists()


def test_crafted_pickle_refused_by_sft_resume(tmp_path):
    """The SFT/CPT stages resume through the Hugging Face Trainer, which reads rng_state.pth with
    weights_only=True (checked here on the file it reads)."""
    import torch

    path = crafted(tmp_path / "checkpoint-1" / "rng_state.pth", tmp_path / "PWNED")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not (tmp_path / "PWNED").exists()


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server naming
        self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.seen.append(dict(self.headers))
        body = json.dumps({"choices": [{"message": {"content": "Score: 7"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Recorder.seen = []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_key_not_sent_unless_its_variable_is_named(endpoint, monkeypatch):
    from trimpi.generation.client import make_client

    monkeypatch.setenv("OPENAI_API_KEY", "sk-global")
    monkeypatch.setenv("TRIMPI_API_KEY", "sk-trimpi")
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-judge")
    messages = [{"role": "user", "content": "hi"}]
    make_client(endpoint, "m").complete([messages])
    assert "Authorization" not in Recorder.seen[-1]
    make_client(endpoint, "m", api_key_env="MY_JUDGE_KEY").complete([messages])  # loopback: allowed
    assert Recorder.seen[-1]["Authorization"] == "Bearer sk-judge"


def test_key_goes_only_over_https_or_to_loopback(monkeypatch):
    from trimpi.errors import ModelError
    from trimpi.generation.client import endpoint_key

    monkeypatch.setenv("K", "v")
    assert endpoint_key("https://api.example.com/v1", "K") == "v"
    for url in ("http://localhost:8000/v1", "http://127.0.0.5:1/v1", "http://[::1]:8000/v1"):
        assert endpoint_key(url, "K") == "v"
    for url in ("http://api.example.com/v1", "http://10.0.0.2:8000/v1", "http://localhost.evil.com/v1"):
        with pytest.raises(ModelError, match=r"refusing to send \$K over plain http://"):
            endpoint_key(url, "K")
    with pytest.raises(ModelError, match=r"\$UNSET_VAR_XYZ \(--api-key-env\) is not set"):
        endpoint_key("https://api.example.com/v1", "UNSET_VAR_XYZ")
    assert endpoint_key("http://api.example.com/v1", None) is None


def test_recipe_key_variable_needs_an_endpoint():
    from trimpi.errors import ConfigError
    from trimpi.pipeline.recipe import parse_recipe

    with pytest.raises(ConfigError, match="judge.api_key_env: only an endpoint"):
        parse_recipe({"model": "micro", "data": {"path": "d"}, "methods": ["in_context"],
                      "judge": {"model": "smol", "api_key_env": "K"}})


def test_dry_run_says_what_code_and_endpoint_a_recipe_reaches(tmp_path):
    from typer.testing import CliRunner

    from trimpi.cli import app

    data = tmp_path / "data"
    data.mkdir()
    rec = {"id": "t0", "task": "custom", "images": [], "query": "q", "answer": "a", "response": "a",
           "answer_type": "evilmod:score"}
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text(json.dumps({**rec, "split": split}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel: micro\ndata: {{path: {data}}}\nmethods: [in_context]\n"
                      "judge: {url: 'http://judge.example.com/v1', model: j, api_key_env: MY_KEY}\n")
    res = CliRunner().invoke(app, ["run", str(recipe), "--dry-run", "--out", str(tmp_path / "run")])
    lines = res.output.splitlines()
    assert lines[0] == (f"custom code: answer type evilmod:score named by {data / 'test.jsonl'} "
                        "(refused unless you pass --trust-code evilmod:score)")
    assert lines[1] == ("judge endpoint: http://judge.example.com/v1 (API key from $MY_KEY; refused: plain http:// "
                        "to another host) receives the records and responses it rates")
    assert not (tmp_path / "run").exists()

