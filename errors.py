"""The one error type for user mistakes, and the CLI boundary that turns it into a one-line message."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

LOG_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"
PROJECT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class SR4RSError(Exception):
    """A mistake the user can fix (bad file, bad parameter): shown as one line, never a traceback."""


def setup_logging(verbose: bool = True) -> None:
    """Configure the root logger the way every SR4RS command logs (time, level, message)."""
    logging.basicConfig(format=LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S",
                        level=logging.INFO if verbose else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_project_info_only)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # it has a handler of its own


def _project_info_only(record: logging.LogRecord) -> bool:
    """Keep warnings from anywhere, but INFO lines only from SR4RS (TensorFlow's are internals)."""
    return record.levelno >= logging.WARNING or os.path.dirname(record.pathname) + os.sep == PROJECT_DIR


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
