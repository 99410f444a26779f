"""The command-line boundary: `run_cli` runs a command's `main(argv)` and turns user mistakes into one
line on stderr and exit code 2; the `sr4rs-*` entry points of the installed package."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from errors import SR4RSError


def run_cli(main: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> int:
    """Run a CLI `main(argv)`; user mistakes become `error: ...` on stderr and exit code 2.

    Args:
        main: the command's main function, taking the argument list.
        argv: arguments (defaults to sys.argv[1:]).

    Returns:
        the process exit code.
    """
    try:
        return int(main(argv) or 0)
    except (SR4RSError, OSError) as err:  # OSError: the system said no (permissions, full disk, ...)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(module: str) -> None:
    sys.exit(run_cli(importlib.import_module(module).main))


def extract() -> None:
    """`sr4rs-extract`: extract_patches.py."""
    _run("extract_patches")


def train() -> None:
    """`sr4rs-train`: train.py."""
    _run("train")


def sr() -> None:
    """`sr4rs-sr`: sr.py."""
    _run("sr")


def evaluate() -> None:
    """`sr4rs-evaluate`: evaluate.py."""
    _run("evaluate")
