"""Logging of the SR4RS commands: every module logs under the `sr4rs` namespace, whose INFO lines are
shown; other libraries (TensorFlow, absl, OTB) show warnings and errors only, TensorFlow's C++ start-up
lines each once."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

NAMESPACE = "sr4rs"
LOG_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"
# A line of TensorFlow's C++ log: level, message (absl's format, TF >= 2.17, or TensorFlow's own before).
NATIVE_LOG_LINE = re.compile(r"(?:[\d-]+ [\d:.]+: )?([IWEF])(?:\d{4} [\d:.]+ +\d+)? \S+:\d+\] (.*)")
ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def get_logger(module: str) -> logging.Logger:
    """The logger of an SR4RS module, e.g. `get_logger("train")` -> `sr4rs.train`."""
    return logging.getLogger(f"{NAMESPACE}.{module}")


def setup_logging(verbose: bool = True) -> None:
    """Configure logging the way every SR4RS command logs (time, level, message).

    Args:
        verbose: show the INFO lines of SR4RS (else warnings and errors only).
    """
    logging.basicConfig(format=LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S", level=logging.WARNING)
    logging.getLogger(NAMESPACE).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # it has a handler of its own


def quiet_libraries(quiet: bool) -> None:
    """Set the log levels of TensorFlow's and OTB's C++ code, which they read when they load: INFO lines
    hidden (as SR4RS hides other libraries' INFO logs); with --quiet, errors only. A level the user sets
    with TF_CPP_MIN_LOG_LEVEL holds unless --quiet asks for less.

    Args:
        quiet: the --quiet value.
    """
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1")
    level = int(level) if level.isdigit() else 1
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(max(level, 2) if quiet else level)
    if quiet:
        os.environ["OTB_LOGGER_LEVEL"] = "CRITICAL"


def native_log_lines(text: str, quiet: bool) -> list[str]:
    """The lines of TensorFlow's C++ log worth showing, each message once: warnings and errors (errors
    only when quiet); the lines following a log line (its continuation) go with it.

    Args:
        text: what TensorFlow wrote on stderr.
        quiet: errors only.
    """
    lowest, shown, seen, keep = "EF" if quiet else "WEF", [], set(), not quiet
    for line in text.splitlines():
        match = NATIVE_LOG_LINE.match(line)
        if match:
            keep = match[1] in lowest and match[2] not in seen
            seen.add(match[2])
        elif line == ABSL_BANNER:
            keep = False
        if keep:
            shown.append(line)
    return shown


@contextlib.contextmanager
def native_start_up(quiet: bool) -> Iterator[None]:
    """Around the first import of TensorFlow: its C++ start-up lines (written before its log settings
    apply, so TF_CPP_MIN_LOG_LEVEL misses them, and twice: TensorFlow 2.21's two libraries each write
    them) are captured and shown as native_log_lines says; all of them when the import fails.

    Args:
        quiet: errors only.
    """
    sys.stderr.flush()
    saved, imported = os.dup(2), False
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            imported = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            lines = native_log_lines(text, quiet) if imported else text.splitlines()
            if lines:
                print("\n".join(lines), file=sys.stderr)
