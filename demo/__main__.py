"""`python -m demo`: the whole SR4RS workflow on the built-in demo scene (see demo/run.py)."""
import sys

from cli import run_cli
from demo.run import main

sys.exit(run_cli(main))
