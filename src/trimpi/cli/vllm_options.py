"""The vLLM engine options `trimpi train rl` and `trimpi eval` share."""

from __future__ import annotations

from typing import Annotated

import typer

MaxModelLen = Annotated[int | None, typer.Option(
    "--vllm-max-model-len", help="vLLM's longest prompt + generated text (default: the model's, at most 8192).")]
EnforceEager = Annotated[bool | None, typer.Option(
    "--vllm-enforce-eager/--no-vllm-enforce-eager",
    help="vLLM without torch.compile and CUDA graphs (default: eager on CPU, where compiling adds 10-70 s to the "
         "start; compiled on GPU).")]
