"""`trimpi data cot` against an OpenAI-compatible endpoint served on 127.0.0.1 by a thread."""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import typer
from typer.testing import CliRunner

from trimpi.cli.cot import cot
from trimpi.data.io import read_json
from trimpi.data.schema import PolicyStore, load_records
from trimpi.errors import DataError, ModelError


def app() -> typer.Typer:
    cli = typer.Typer()
    cli.command()(cot)
    cli.command("other")(lambda: None)  # keeps `cot` a named sub-command
    return cli


class Endpoint:
    """A chat-completions server answering from `answer(body)`; keeps (path, headers, body) of each request."""

    def __init__(self, answer):
        self.requests: list[tuple[str, dict, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer(body)}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_endpoint_teacher_end_to_end(dataset, tmp_path):
    records = load_records(dataset / "train.jsonl")
    gold = {}  # (query, image bytes) -> answer
    for r in records:
        gold[(r.query, (dataset / r.images[-1]).read_bytes())] = r.answer
    wrong_policy = records[0].policy

    def answer(body):
        user = body["messages"][-1]["content"]
        image = base64.b64decode(next(b for b in user if b["type"] == "image_url")["image_url"]["url"].split(",")[1])
        query = next(b["text"] for b in user if b["type"] == "text")
        label = gold[(query, image)]
        label = "Case 99" if wrong_policy in query else label  # one policy's traces are all wrong
        return f"<think>Condition 1 holds, so the response is {label}.</think>\n\\boxed{{{label}}}"

    server = Endpoint(answer)
    out = tmp_path / "teacher.jsonl"
    try:
        result = CliRunner().invoke(app(), [
            "cot", "--data", str(dataset), "--teacher", server.url, "--teacher-model", "teacher-7b", "--out", str(out),
            "--samples-per-example", "2", "--max-new-tokens", "77", "--temperature", "0.5", "--concurrency", "2",
            "--no-progress"])
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    n_wrong = sum(r.policy == wrong_policy for r in records)
    assert f"kept {8 - n_wrong} / 8 records" in result.output
    assert len(server.requests) == 1 + 8 + n_wrong  # one timed call for the estimate; wrong ones are retried once
    assert "teacher: " in result.output and "s per record (one call, measured); 8 records" in result.output
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Content-Type"] == "application/json"
    assert body["model"] == "teacher-7b" and body["max_tokens"] == 77 and body["temperature"] == 0.5
    system, user = body["messages"]
    policies = PolicyStore(dataset)
    texts = {policies.get(r).text for r in records}
    assert system["role"] == "system" and system["content"][0]["text"] in texts
    assert user["role"] == "user" and [b["type"] for b in user["content"]] == ["image_url", "text", "text"]
    assert user["content"][1]["text"] in {r.query for r in records}
    assert "<think>" in user["content"][2]["text"]
    kept = load_records(out)
    assert {r.id for r in kept} == {r.id for r in records if r.policy != wrong_policy}
    assert all(r.meta["teacher"]["model"] == f"teacher-7b@{server.url}" for r in kept)
    by_id = {r.id: r for r in records}
    for r in kept:  # paths now relative to the output's directory
        assert (out.parent / r.images[0]).resolve() == (dataset / by_id[r.id].images[0]).resolve()
        assert (out.parent / r.scene).resolve() == (dataset / by_id[r.id].scene).resolve()
    summary = read_json(out.with_name("teacher.summary.json"))
    assert summary["kept"] == 8 - n_wrong and summary["rejections"] == {"wrong_answer": 2 * n_wrong}


def test_cli_one_line_errors(dataset, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(app(), ["cot", "--data", str(dataset), "--teacher", f"http://127.0.0.1:{port}/v1",
                                        "--out", str(tmp_path / "x.jsonl"), "--no-progress"])
    assert isinstance(result.exception, ModelError) and "cannot reach the endpoint" in str(result.exception)
    assert "\n" not in str(result.exception)
    result = CliRunner().invoke(app(), ["cot", "--data", str(dataset), "--teacher", str(tmp_path / "no-model")])
    assert isinstance(result.exception, ModelError) and "no-model" in str(result.exception)
    result = CliRunner().invoke(app(), ["cot", "--data", str(tmp_path / "nodata"), "--teacher", "micro"])
    assert isinstance(result.exception, DataError) and "dataset directory not found" in str(result.exception)
