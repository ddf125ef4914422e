"""`newsflow` subcommands of the processors area."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands; each sets ``func(args, settings) -> int``."""
