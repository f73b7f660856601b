"""Chat clients for an LLM judge or a teacher: an OpenAI-compatible endpoint or a local model.

Both take conversations in the Hugging Face chat format used across trimpi (content blocks
{"type": "text", "text": ...} and {"type": "image", "path": ...}, see
`trimpi.data.schema.render_messages`) and return one reply per conversation.

    client = make_client("http://localhost:8000/v1", model="Qwen2.5-VL-7B-Instruct")
    client = make_client("path/to/checkpoint")            # local model, greedy by default
    replies = client.complete([messages, ...], max_tokens=256)

The endpoint client speaks `POST {base_url}/chat/completions` with urllib (images become
base64 data URLs); its API key comes from `api_key` or $TRIMPI_API_KEY / $OPENAI_API_KEY.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from trimpi.errors import DataError, ModelError

Messages = list[dict[str, Any]]


class ChatClient(Protocol):
    name: str

    def complete(self, conversations: list[Messages], max_tokens: int = 512, temperature: float = 0.0) -> list[str]:
        """One assistant reply per conversation."""
        ...


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _data_url(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    mime = mimetypes.guess_type(p.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode()}"


def openai_content(content: Any) -> Any:
    """Content blocks with local image paths → OpenAI chat content (image_url data URLs)."""
    if isinstance(content, str):
        return content
    out = []
    for block in content:
        if block.get("type") == "image":
            out.append({"type": "image_url", "image_url": {"url": _data_url(block["path"])}})
        else:
            out.append({"type": "text", "text": block.get("text", "")})
    return out


class OpenAIClient:
    """Client of an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, llama.cpp, OpenAI)."""

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or os.environ.get("TRIMPI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.name = f"{model}@{self.base_url}"

    def request_body(self, messages: Messages, max_tokens: int, temperature: float) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": m["role"], "content": openai_content(m["content"])} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            raise ModelError(f"{self.base_url}: HTTP {e.code} from chat/completions ({e.reason})") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise ModelError(f"{self.base_url}: cannot reach the endpoint ({e})".splitlines()[0]) from None
        except json.JSONDecodeError:
            raise ModelError(f"{self.base_url}: chat/completions did not return JSON") from None

    def complete(self, conversations: list[Messages], max_tokens: int = 512, temperature: float = 0.0) -> list[str]:
        replies = []
        for messages in conversations:
            data = self._post(self.request_body(messages, max_tokens, temperature))
            try:
                replies.append(str(data["choices"][0]["message"]["content"] or ""))
            except (KeyError, IndexError, TypeError):
                raise ModelError(f"{self.base_url}: reply without choices[0].message.content") from None
        return replies


class LocalClient:
    """A local (model, processor) pair answering through the batched generation engine."""

    def __init__(self, model, processor, name: str = "local", batch_size: int = 4, progress: bool = False):
        from trimpi.generation.engine import HFGenerateEngine

        self.model, self.processor, self.name = model, processor, name
        self.batch_size, self.progress = batch_size, progress
        self.engine = HFGenerateEngine(model, processor, batch_size=batch_size)

    def prompts(self, conversations: list[Messages]):
        from trimpi.generation.prompts import Prompt
        from trimpi.models.processing import load_message_images, render_text

        return [
            Prompt(text=render_text(self.processor, m, add_generation_prompt=True), images=load_message_images(m))
            for m in conversations
        ]

    def complete(self, conversations: list[Messages], max_tokens: int = 512, temperature: float = 0.0) -> list[str]:
        from trimpi.generation.engine import SamplingParams
        from trimpi.generation.greedy import generate_texts

        prompts = self.prompts(conversations)
        if temperature <= 0:
            done = generate_texts(self.engine, prompts, self.batch_size, max_tokens, "chat", self.progress)
            return [c.text for c in done]
        params = SamplingParams(max_completion_length=max_tokens, temperature=temperature)
        return [g[0].text for g in self.engine.generate(prompts, 1, params)]


def make_client(spec: str, model: str | None = None, batch_size: int = 4, **load_kwargs) -> ChatClient:
    """An endpoint client for an http(s) URL (`model` names the served model), else a local model."""
    if is_url(spec):
        return OpenAIClient(spec, model=model or "default")
    from trimpi.models.loading import load_model

    net, processor = load_model(spec, **load_kwargs)
    return LocalClient(net, processor, name=str(spec), batch_size=batch_size)
