"""trimpi: Multimodal Policy Internalization for Hugging Face VLMs."""

__version__ = "0.1.0"
