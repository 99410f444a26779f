"""The command-line boundary: `run_cli` runs a command's `main(argv)` and turns user mistakes into one
line on stderr and exit code 2; `ArgumentParser` makes usage errors such mistakes; the `sr4rs-*` entry
points of the installed package."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

from errors import SR4RSError


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are SR4RSError: one line `error: ...` and exit code 2 under
    `run_cli`, like every other mistake (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        raise SR4RSError(f"{message} (see {self.prog} --help)")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, `timeout`, `docker stop`, `kill`), handled like Ctrl-C:
    outputs in progress are removed, train.py saves a checkpoint."""


def _terminate(signum: int, frame: object) -> NoReturn:
    raise Terminated()


def os_error_text(err: OSError) -> str:
    """The system's reason in lower case, e.g. "no space left on device"."""
    reason = err.strerror or str(err)
    return reason[:1].lower() + reason[1:]


def run_cli(main: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> int:
    """Run a CLI `main(argv)`; user mistakes become `error: ...` on stderr and exit code 2; Ctrl-C and
    SIGTERM stop it cleanly (exit codes 130 and 143).

    Args:
        main: the command's main function, taking the argument list.
        argv: arguments (defaults to sys.argv[1:]).

    Returns:
        the process exit code.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return int(main(argv) or 0)
    except SR4RSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the system said no (permissions, full disk, ...): "error: FILE: reason"
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{os_error_text(err)}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
