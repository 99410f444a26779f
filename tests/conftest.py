"""Test setup: quiet TensorFlow logs (the project root and tests/ are on sys.path via pyproject), and the
SavedModel fixtures shared by several test files."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from sr_models import cached, generator_model, tf1_nearest_model  # noqa: E402


@pytest.fixture(scope="session")
def tf1_nearest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An original-style TF1 SavedModel (int16 `lr_input:0`) doing exact x4 nearest neighbour, 3 bands."""
    return cached(tmp_path_factory, "tf1_nearest", tf1_nearest_model)


@pytest.fixture(scope="session")
def generator3(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random SR4RS generator exported by export.py, 3 bands."""
    return cached(tmp_path_factory, "generator3", lambda p: generator_model(p, 3))
