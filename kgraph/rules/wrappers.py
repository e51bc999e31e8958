"""Rules for more Keras layer families (being written)."""

from __future__ import annotations

__all__ = ["register"]


def register() -> None:
    """Register this module's rules."""
