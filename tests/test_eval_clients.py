"""Chat clients (OpenAI-compatible endpoint, local model), judge score parsing and answer scoring."""

from __future__ import annotations

import base64
import io
import json
import urllib.error

import pytest
import torch
from PIL import Image

from trimpi.data.gta.scorers import lexical_scorer
from trimpi.data.schema import Record
from trimpi.errors import ModelError
from trimpi.eval import LocalClient, OpenAIClient, make_client
from trimpi.eval.scoring import score_example
from trimpi.generation.judge import parse_score


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_openai_client_request_and_reply(tmp_path, monkeypatch):
    image = tmp_path / "a.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(image)
    sent = []

    def fake_urlopen(req, timeout):
        sent.append((req.full_url, dict(req.header_items()), json.loads(req.data), timeout))
        return FakeResponse(json.dumps({"choices": [{"message": {"content": "Score: 7"}}]}).encode())

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    client = make_client("http://127.0.0.1:9/v1/", model="judge-7b")
    assert isinstance(client, OpenAIClient)
    client.api_key = "k"
    messages = [{"role": "system", "content": "be strict"},
                {"role": "user", "content": [{"type": "image", "path": str(image)}, {"type": "text", "text": "hi"}]}]
    assert client.complete([messages, messages], max_tokens=9) == ["Score: 7", "Score: 7"]
    url, headers, body, _ = sent[0]
    assert url == "http://127.0.0.1:9/v1/chat/completions" and headers["Authorization"] == "Bearer k"
    assert body["model"] == "judge-7b" and body["max_tokens"] == 9 and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": "be strict"}
    block = body["messages"][1]["content"][0]
    assert block["type"] == "image_url" and block["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(block["image_url"]["url"].split(",", 1)[1]) == image.read_bytes()
    assert body["messages"][1]["content"][1] == {"type": "text", "text": "hi"}


def test_openai_client_errors_are_one_line(monkeypatch):
    def refused(req, timeout):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr("urllib.request.urlopen", refused)
    with pytest.raises(ModelError, match="cannot reach") as err:
        OpenAIClient("http://127.0.0.1:9/v1").complete([[{"role": "user", "content": "x"}]])
    assert "\n" not in str(err.value)
    monkeypatch.setattr("urllib.request.urlopen", lambda req, timeout: FakeResponse(b'{"choices": []}'))
    with pytest.raises(ModelError, match="choices"):
        OpenAIClient("http://127.0.0.1:9/v1").complete([[{"role": "user", "content": "x"}]])


def test_local_client_is_greedy(tmp_path):
    from trimpi.models.processing import visual_token_ids
    from trimpi.models.tiny import build_tiny

    model, processor = build_tiny("idefics3")
    Image.new("RGB", (112, 112), (0, 90, 200)).save(tmp_path / "b.png")
    convs = [
        [{"role": "user", "content": [{"type": "text", "text": "what should be the response?"}]}],
        [{"role": "user", "content": [{"type": "image", "path": str(tmp_path / "b.png")},
                                      {"type": "text", "text": "a small red metal cube"}]}],
    ]
    client = LocalClient(model, processor, name="tiny", batch_size=2)
    replies = client.complete(convs, max_tokens=6)
    assert replies == client.complete(convs, max_tokens=6)
    text = processor.apply_chat_template(convs[0], tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, do_sample=False, max_new_tokens=6, suppress_tokens=visual_token_ids(processor),
                             pad_token_id=processor.tokenizer.pad_token_id)
    expected = processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert replies[0] == expected


def test_parse_score():
    assert parse_score("Good.\nScore: 7") == 7.0
    assert parse_score("**Score:** 9.5") == 9.5
    assert parse_score("Score: 4/10") == 4.0
    assert parse_score("It cites nothing.\n0") == 0.0
    assert parse_score("Score: 11") is None
    assert parse_score("no number") is None
    assert parse_score("") is None


def rec(task: str, answer: str) -> Record:
    return Record(id="x", task=task, query="q", answer=answer, response=f"\\boxed{{{answer}}}")


def score_boxed(record: Record, text: str) -> dict:
    return score_example(record, text, lexical_scorer())


def test_boxed_scoring():
    assert score_boxed(rec("clevr", "Case 3"), "<think>\\boxed{Case 1}</think> \\boxed{Case 3}")["correct"]
    assert not score_boxed(rec("clevr", "Case 3"), "\\boxed{case 3}")["correct"]  # exact for ClevrPolicy
    assert not score_boxed(rec("clevr", "Case 3"), "<think>\\boxed{Case 3}</think> so Case 3")["correct"]
    assert score_boxed(rec("general", "yes"), "\\boxed{ Yes. }")["correct"]  # normalized for general
    assert score_boxed(rec("general", "2"), "\\boxed{2}")["score"] == 1.0
    assert score_boxed(rec("general", "2"), "two")["pred"] is None


def test_inputs_follow_the_model_dtype(tmp_path):
    """A bf16 model gets bf16 pixel values (the processor makes fp32); integer tensors keep their dtype."""
    from trimpi.generation.prompts import to_model
    from trimpi.models.tiny import build_tiny

    model, processor = build_tiny("idefics3")
    model = model.to(torch.bfloat16)
    Image.new("RGB", (112, 112), (200, 30, 30)).save(tmp_path / "c.png")
    conv = [{"role": "user", "content": [{"type": "image", "path": str(tmp_path / "c.png")},
                                         {"type": "text", "text": "a small red metal cube"}]}]
    text = processor.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    out = to_model(processor(text=[text], images=[[Image.open(tmp_path / "c.png")]], return_tensors="pt"), model)
    assert out["pixel_values"].dtype == torch.bfloat16 and out["input_ids"].dtype == torch.long
    assert isinstance(LocalClient(model, processor).complete([conv], max_tokens=3)[0], str)


def test_checkpoint_repetition_penalty_is_reset():
    from types import SimpleNamespace

    from trimpi.eval.generate import neutralize_generation_config
    from trimpi.generation.greedy import greedy_params

    model = SimpleNamespace(generation_config=SimpleNamespace(repetition_penalty=1.05, no_repeat_ngram_size=0))
    assert neutralize_generation_config(model) == {"repetition_penalty": 1.05}
    assert model.generation_config.repetition_penalty == 1.0
    assert neutralize_generation_config(SimpleNamespace()) == {}
    assert greedy_params(7).top_k == 1 and greedy_params(7).max_completion_length == 7
