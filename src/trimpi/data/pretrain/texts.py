"""The fixed tokenizer corpus of the shipped base: broad generated text, independent of any user dataset.

ClevrPolicy policy documents of every variant and depth with gold traces (full and compact)
and direct answers, override notes, GTAPolicy's tool policy (and its override), general and
perception questions, captions, and general English prose (the docstrings of Python's built-ins, so
that the merges also cover words no generated text uses). Drawn from the pretraining seed space
(`split`), so it holds no evaluation policy name. The tokenizer is byte-level: any text, in any
language, encodes without retraining it.
"""

from __future__ import annotations

import numpy as np

from trimpi.data.clevr.captions import CAPTION_PROMPT, QUESTIONS, caption_vocabulary
from trimpi.data.clevr.cot import gold_trace
from trimpi.data.clevr.questions import INSTRUCTION as GENERAL_INSTRUCTION
from trimpi.data.clevr.questions import general_question
from trimpi.data.clevr.tree import ATTRIBUTE_VALUES, decide
from trimpi.data.pretrain import split
from trimpi.data.pretrain.corpus import DEPTHS, OBJECT_PROMPT, UPDATE_NOTE, draw_policy

TEXTS = 99  # the `part` of the seed key used for tokenizer text


def random_objects(rng: np.random.Generator) -> list[dict]:
    """Objects with random attributes (no layout: traces and questions only read attributes)."""
    return [{a: vals[int(rng.integers(len(vals)))] for a, vals in ATTRIBUTE_VALUES.items()}
            for _ in range(int(rng.integers(1, 11)))]


def general_texts() -> list[str]:
    """General English prose available offline on every machine: the docstrings of Python's built-ins."""
    import builtins

    docs = (getattr(builtins, name).__doc__ for name in sorted(dir(builtins)) if not name.startswith("_"))
    return [line.strip() for doc in docs if doc for line in doc.splitlines() if len(line.strip()) > 20]


def tokenizer_texts(seed: int = 0, policies: int = 300) -> list[str]:
    """Lines to train the base's BPE on: `policies` policies per (variant, depth), plus fixed texts."""
    from trimpi.data.clevr.build import boxed, query_text
    from trimpi.data.gta.text import policy_text

    excl = split.Exclusions()
    out = [policy_text(), policy_text(override=True), CAPTION_PROMPT, GENERAL_INSTRUCTION, *QUESTIONS]
    out += caption_vocabulary() + general_texts()
    for variant in "TM":
        for depth in DEPTHS:
            for i in range(policies):
                rng = split.rng_for(TEXTS, seed, (depth * 2 + (variant == "M")) * 1_000_000 + i)
                policy = draw_policy(rng, depth, variant, excl)
                objects = random_objects(rng)
                answer = decide(policy, objects)
                style = ("compact", "full")[i % 2]
                out += [policy["text"], query_text(policy["name"]), gold_trace(policy["name"], policy, objects, style)[0],
                        boxed(answer), UPDATE_NOTE.format(name=policy["name"])]
                out.append(f"{GENERAL_INSTRUCTION} Question: {general_question(rng, objects)[1]}")
                out.append(OBJECT_PROMPT.format(x=int(rng.integers(101)), y=int(rng.integers(101))))
    return out
