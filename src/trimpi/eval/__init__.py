"""Evaluation suite (SPEC §6): accuracy, in-context, override, policy in context, referral,
forgetting and efficiency, with per-example predictions saved next to the scores.

    trimpi eval --model CKPT --data DIR --protocols accuracy,referral,efficiency --out runs/eval

    from trimpi.eval import EvalOptions, Subject, evaluate_model, run_eval
    run_eval("runs/trimpi/final", "data/clevr/T-d2", "runs/eval", EvalOptions(protocols=["accuracy"]))

Modules: protocols (what each protocol reads), generate (batched greedy generation on the
RL engines), scoring (per-example scores by answer type through `trimpi.data.answers`, the
RL reward's own scorer; summaries), referral (exact ClevrPolicy referral vs the tree path),
client (OpenAI-compatible endpoint or local model, shared by the LLM judge and teachers), judge
(0–10 referral ratings; the judge of free-form answers), efficiency (prompt
tokens and prefill time), forgetting (before vs after), files (predictions and scores.json),
runner (orchestration).
"""

from trimpi.eval.client import ChatClient, LocalClient, OpenAIClient, make_client
from trimpi.eval.protocols import PROTOCOLS, parse_protocols
from trimpi.eval.runner import EvalOptions, Subject, add_forgetting_baseline, evaluate_model, run_eval

__all__ = [
    "PROTOCOLS",
    "ChatClient",
    "EvalOptions",
    "LocalClient",
    "OpenAIClient",
    "Subject",
    "add_forgetting_baseline",
    "evaluate_model",
    "make_client",
    "parse_protocols",
    "run_eval",
]
