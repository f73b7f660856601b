"""Chat clients for an LLM judge or a teacher: an OpenAI-compatible endpoint or a local model.

Both take conversations in the Hugging Face chat format used across trimpi (content blocks
{"type": "text", "text": ...} and {"type": "image", "path": ...}, see
`trimpi.data.schema.render_messages`) and return one reply per conversation.

    client = make_client("http://localhost:8000/v1", model="Qwen2.5-VL-7B-Instruct")
    client = make_client("path/to/checkpoint")            # local model, greedy by default
    replies = client.complete([messages, ...], max_tokens=256)

The endpoint client speaks `POST {base_url}/chat/completions` with urllib (images become
base64 data URLs). It sends an API key only when the user named the environment variable holding it
(`api_key_env`: `--api-key-env` on the command line, `api_key_env:` in a recipe's judge), and only over
https:// or to a loopback host: a URL may come from a downloaded recipe, a key never goes with it by
default (`trimpi.trust`).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import ipaddress
import re
import urllib.error
import urllib.parse
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
    """The image file as a data URL; a file that is not a decodable image is never sent (a dataset could name
    any readable file)."""
    from trimpi.data.io import image_problem

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    problem = image_problem(p)
    if problem:
        raise DataError(f"{p}: not sent to the endpoint: not a readable image ({problem})")
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


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine (localhost, 127.0.0.0/8, ::1): a key sent there stays on it."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_key(url: str, api_key_env: str | None) -> str | None:
    """The API key to send to `url`: the value of the variable the user named for it, or None when none was
    named. A one-line ModelError when the variable is unset, or the URL is plain http:// to another host."""
    if api_key_env is None:
        return None
    if not _ENV_NAME.fullmatch(api_key_env):
        raise ModelError(f"--api-key-env: expected the name of an environment variable, got {api_key_env!r}")
    key = os.environ.get(api_key_env)
    if not key:
        raise ModelError(f"{url}: the API key variable ${api_key_env} (--api-key-env) is not set")
    if not url.startswith("https://") and not is_loopback(url):
        raise ModelError(f"{url}: refusing to send ${api_key_env} over plain http:// to another host; use an "
                         "https:// URL or a loopback address (localhost, 127.0.0.1)")
    return key


def describe_endpoint(url: str, api_key_env: str | None) -> str:
    """Where requests go and with which key, in one phrase (for `trimpi run --dry-run`)."""
    if api_key_env is None:
        return f"{url} (no API key sent)"
    safe = url.startswith("https://") or is_loopback(url)
    return f"{url} (API key from ${api_key_env}{'' if safe else '; refused: plain http:// to another host'})"


class OpenAIClient:
    """Client of an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, llama.cpp, OpenAI).

    `api_key_env` names the environment variable holding the endpoint's key (`endpoint_key`); without it no
    key is sent. `api_key` gives the key itself (a caller that made it, such as the vLLM server mode)."""

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None, timeout: float = 120.0,
                 api_key_env: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or endpoint_key(self.base_url, api_key_env)
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


def make_client(spec: str, model: str | None = None, batch_size: int = 4, api_key_env: str | None = None,
                **load_kwargs) -> ChatClient:
    """An endpoint client for an http(s) URL (`model` names the served model; its key from the variable
    `api_key_env`, see `endpoint_key`), else a local model."""
    if is_url(spec):
        return OpenAIClient(spec, model=model or "default", api_key_env=api_key_env)
    from trimpi.models.loading import load_model

    net, processor = load_model(spec, **load_kwargs)
    return LocalClient(net, processor, name=str(spec), batch_size=batch_size)
