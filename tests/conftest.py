"""Test setup: quiet TensorFlow logs (the project root and tests/ are on sys.path via pyproject)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
