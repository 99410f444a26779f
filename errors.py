"""The one error type for user mistakes (bad file, bad parameter, full disk): `cli.run_cli` turns it
into a one-line message and exit code 2."""
from __future__ import annotations


class SR4RSError(Exception):
    """A mistake the user can fix (bad file, bad parameter): shown as one line, never a traceback."""
