"""Offline tokenizers: a byte-level BPE trained on the dataset's own text, with a ChatML template."""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

CHAT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Image placeholder each family's chat template emits for an {"type": "image"} block.
IMAGE_PLACEHOLDER = {
    "qwen": "<|vision_start|><|image_pad|><|vision_end|>",
    "idefics3": "<image>",
    "llava": "<image>",
}
FAMILY_SPECIALS = {
    "qwen": ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
    "idefics3": ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"),
    "llava": ("<image>",),
}


def chatml_template(image_placeholder: str) -> str:
    """A ChatML Jinja template; image blocks become `image_placeholder`, text blocks their text."""
    return (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}" + image_placeholder + "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def train_bpe_tokenizer(
    texts: Iterable[str], family: str, vocab_size: int = 2048, padding_side: str = "right"
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` (well under a second for a few thousand lines).

    The tokenizer carries the ChatML specials, the model family's image specials and a chat
    template that emits the family's image placeholder. Byte-level, so any text encodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if family not in FAMILY_SPECIALS:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILY_SPECIALS)}")
    specials = list(CHAT_SPECIALS) + list(FAMILY_SPECIALS[family])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) or ["hello"], trainer)
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(FAMILY_SPECIALS[family]),
        chat_template=chatml_template(IMAGE_PLACEHOLDER[family]),
    )
    out.padding_side = padding_side
    return out
