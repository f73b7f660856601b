"""Evaluation suite (SPEC §6): accuracy, in-context, override, policy in context, referral,
forgetting and efficiency, with per-example predictions saved next to the scores.

    trimpi eval --model CKPT --data DIR --protocols accuracy,referral,efficiency --out runs/eval

    from trimpi.eval import EvalOptions, Subject, evaluate_model, run_eval
    run_eval("runs/trimpi/final", "data/clevr/T-d2", "runs/eval", EvalOptions(protocols=["accuracy"]))

Modules: protocols (what each protocol reads), generate (engines and prompts for greedy
generation), scoring (per-example scores by answer type through `trimpi.data.answers`, the
RL reward's own scorer; summaries), referral (exact ClevrPolicy referral vs the tree path),
judge (0–10 referral ratings), efficiency (prompt tokens and prefill time), forgetting (before
vs after), files (predictions and scores.json), runner (orchestration). The chat clients
(OpenAI-compatible endpoint or local model) and the judge of free-form answers live in
`trimpi.generation.client` / `trimpi.generation.judge`, shared with RL rewards and teachers;
the clients are re-exported here.
"""

from trimpi.eval.protocols import PROTOCOLS, parse_protocols
from trimpi.eval.runner import EvalOptions, Subject, add_forgetting_baseline, evaluate_model, run_eval
from trimpi.generation.client import ChatClient, LocalClient, OpenAIClient, make_client

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
