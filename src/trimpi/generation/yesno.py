"""Yes/no questions to a VLM scored in one forward pass: is "Yes." likelier than "No." as the reply's start?

Used by the `perception` evaluation protocol and by the micro base's pretraining gates.
"""

from __future__ import annotations

import torch

from trimpi.data.clevr.existence import Label
from trimpi.data.clevr.policy import describe
from trimpi.errors import ConfigError


def question(label: Label) -> str:
    """The label as a policy-condition question: "Is there a large cyan object?"."""
    return f"Is there {describe(dict(label))}?"


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """First token ids of "Yes." and "No." (they must differ)."""
    yes, no = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("Yes.", "No."))
    if yes == no:
        raise ConfigError("perception: the tokenizer starts 'Yes.' and 'No.' with the same token")
    return yes, no


@torch.no_grad()
def yes_margins(model, processor, questions: list[tuple[str, str]], batch_size: int = 32,
                progress: bool = False) -> list[float]:
    """For (image path, question) pairs: logit of "Yes." minus logit of "No." as the reply's first token."""
    from tqdm.auto import tqdm

    from trimpi.models.processing import encode, tokenizer_of

    yes, no = answer_token_ids(tokenizer_of(processor))
    device = next(model.parameters()).device
    model.eval()
    out: list[float] = []
    for i in tqdm(range(0, len(questions), batch_size), desc="perception", disable=not progress):
        chunk = [[{"role": "user", "content": [{"type": "image", "path": img}, {"type": "text", "text": q}]}]
                 for img, q in questions[i:i + batch_size]]
        batch = encode(processor, chunk, add_generation_prompt=True, padding_side="left").to(device)
        logits = model(**batch).logits[:, -1].float()
        out += (logits[:, yes] - logits[:, no]).tolist()
    return out


def says_yes(model, processor, questions: list[tuple[str, str]], batch_size: int = 32,
             progress: bool = False) -> list[bool]:
    """For (image path, question) pairs: whether "Yes." is the likelier reply."""
    return [m > 0 for m in yes_margins(model, processor, questions, batch_size, progress)]
