"""Logging of the SR4RS commands: every module logs under the `sr4rs` namespace, whose INFO lines are
shown; other libraries (TensorFlow, absl) show warnings and errors only."""
from __future__ import annotations

import logging

NAMESPACE = "sr4rs"
LOG_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"


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
