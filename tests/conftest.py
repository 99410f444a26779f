"""Test setup: quiet TensorFlow logs (the project root and tests/ are on sys.path via pyproject), the `otb`
marker's skip, and the SavedModel fixtures shared by several test files."""
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from savedmodel_fixtures import cached, generator_model, tf1_nearest_model  # noqa: E402

import otb_env  # noqa: E402

OTB_MISSING = ("OTBTF is not available (OTB's otbApplication with {}): run `make otb` to build it into .otb/ "
               "(README, 'The OTB engine without Docker'), or run the tests inside the OTBTF Docker image")


@functools.cache
def otb_missing() -> str | None:
    """Why the `otb` tests cannot run (None when they can): both OTBTF applications are needed."""
    missing = [app for app in otb_env.REQUIRED_APPS if otb_env.load_otb(app) is None]
    return OTB_MISSING.format(" and ".join(missing)) if missing else None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `otb` (pyproject.toml) are skipped, with how to enable them, when OTBTF is missing."""
    if item.get_closest_marker("otb") and otb_missing():
        pytest.skip(otb_missing())


@pytest.fixture(scope="session")
def tf1_nearest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An original-style TF1 SavedModel (int16 `lr_input:0`) doing exact x4 nearest neighbour, 3 bands."""
    return cached(tmp_path_factory, "tf1_nearest", tf1_nearest_model)


@pytest.fixture(scope="session")
def generator3(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random SR4RS generator exported by export.py, 3 bands."""
    return cached(tmp_path_factory, "generator3", lambda p: generator_model(p, 3))
