"""argparse value types shared by the package's command-line tools."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An int >= 1: a bad count is an option error at parsing, not a crash after data and models are loaded."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value
