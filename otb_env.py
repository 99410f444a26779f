"""Find OTB's `otbApplication` binding with OTBTF's applications: already importable (the OTBTF Docker
image), or built by `make otb` into the project's `.otb/` folder (or the folder named by SR4RS_OTB_DIR)."""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from logs import get_logger

logger = get_logger("otb_env")

OTB_DIR_VARIABLE = "SR4RS_OTB_DIR"
DEBIAN_OTB_APPS = "/usr/lib/x86_64-linux-gnu/otb/applications"
REQUIRED_APPS = ("TensorflowModelServe", "PatchesExtraction")


def local_otb_dir() -> str:
    """The folder `make otb` builds into: $SR4RS_OTB_DIR, else `.otb/` next to this file."""
    project_dir = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get(OTB_DIR_VARIABLE) or os.path.join(project_dir, ".otb")


def _use_local_build() -> None:
    folder = local_otb_dir()
    python_dir = os.path.join(folder, "python")
    if not os.path.isfile(os.path.join(python_dir, "otbApplication.py")):
        return
    if python_dir not in sys.path:
        sys.path.append(python_dir)
    paths = [os.path.join(folder, "apps"), DEBIAN_OTB_APPS]
    current = os.environ.get("OTB_APPLICATION_PATH", "")
    os.environ["OTB_APPLICATION_PATH"] = os.pathsep.join(
        [p for p in paths if p not in current.split(os.pathsep)] + ([current] if current else []))


def load_otb(app: str = "TensorflowModelServe") -> ModuleType | None:
    """Import `otbApplication` when it is there and provides `app`; None otherwise."""
    _use_local_build()
    try:
        otb = importlib.import_module("otbApplication")
    except ImportError as err:
        logger.debug("otbApplication cannot be imported: %s", err)
        return None
    if app not in otb.Registry.GetAvailableApplications():
        logger.debug("otbApplication has no %s application", app)
        return None
    return otb
