"""`trimpi train rl`: GRPO / DAPO with PolicyRollout."""

from __future__ import annotations


def rl() -> None:
    """RL with GRPO or DAPO, optionally with PolicyRollout."""
    from trimpi.errors import TrimpiError

    raise TrimpiError("trimpi train rl is not available yet")
