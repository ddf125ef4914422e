"""The `newsflow` command's entry point, light to import: a Ctrl-C in the first ~0.3 s of
any command lands in the imports of ``newsflow.cli`` (pydantic, the areas' commands),
before its ``main`` could catch it, and printed a KeyboardInterrupt traceback."""

from __future__ import annotations

import sys

# As a shell reports a command that SIGINT ended (128 + 2), and `newsflow.cli.main` does.
INTERRUPTED = 130


def main() -> int:
    try:
        from newsflow.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # (one during a command is the command's: cli.main's 130)
        print("newsflow: interrupted while starting", file=sys.stderr)
        return INTERRUPTED
