"""`pip install .`: the wheel holds every top-level module that the `sr4rs-*` entry points need (found
with `ast` from the repository, so that a module added later and not listed in pyproject.toml fails
here), and the installed entry points work from any folder, without the source tree on sys.path."""
from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest
from helpers import ROOT, write_raster
from osgeo import gdal

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    PYPROJECT = tomllib.load(_f)
SCRIPTS = PYPROJECT["project"]["scripts"]
PY_MODULES = set(PYPROJECT["tool"]["setuptools"]["py-modules"])
# entry point -> an option of its command, to check that --help is the help of the right command
HELP_OPTION = {"sr4rs-extract": "--out_lr", "sr4rs-train": "--lr_patches", "sr4rs-sr": "--savedmodel",
               "sr4rs-evaluate": "--ref"}


def top_level_modules(root: str) -> set[str]:
    """Names of the top-level modules (x.py files) of a source tree."""
    return {f[:-3] for f in os.listdir(root) if f.endswith(".py") and os.path.isfile(os.path.join(root, f))}


def _tree(root: str, module: str) -> ast.Module:
    with open(os.path.join(root, module + ".py"), encoding="utf-8") as f:
        return ast.parse(f.read(), module + ".py")


def run_modules(root: str, entry_point: str) -> set[str]:
    """The top-level modules an entry point `module:function` runs: its module, and the modules that
    the function names in strings (cli.py's `_run("train")` imports train by name)."""
    module, function = entry_point.split(":")
    defs = [n for n in _tree(root, module).body if isinstance(n, ast.FunctionDef) and n.name == function]
    assert defs, f"{entry_point}: no function {function} in {module}.py"
    names = {n.value for n in ast.walk(defs[0]) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return {module} | (names & top_level_modules(root))


def needed_modules(root: str, entry_points: list[str]) -> set[str]:
    """Top-level modules the entry points run or import, directly or not (imports inside functions too)."""
    top_level = top_level_modules(root)
    todo = sorted(set().union(*(run_modules(root, e) for e in entry_points)))
    needed: set[str] = set()
    while todo:
        module = todo.pop()
        if module in needed:
            continue
        needed.add(module)
        for node in ast.walk(_tree(root, module)):
            if isinstance(node, ast.Import):
                found = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = {node.module.split(".")[0]}
            else:
                continue
            todo.extend(sorted((found & top_level) - needed))
    return needed


def test_needed_modules_follow_imports_and_the_modules_cli_runs(tmp_path):
    files = {"cli.py": "import a\ndef extract():\n    _run('b')\ndef other():\n    _run('e')\n",
             "a.py": "import os\n", "b.py": "from c import x\ndef f():\n    import d.sub\n",
             "c.py": "x = 'e'\n", "d.py": "", "e.py": "", "unused.py": "import a\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert needed_modules(str(tmp_path), ["cli:extract"]) == {"cli", "a", "b", "c", "d"}
    assert needed_modules(str(tmp_path), ["cli:extract", "cli:other"]) == {"cli", "a", "b", "c", "d", "e"}


def test_the_four_entry_points_are_declared():
    assert SCRIPTS == {"sr4rs-extract": "cli:extract", "sr4rs-train": "cli:train", "sr4rs-sr": "cli:sr",
                       "sr4rs-evaluate": "cli:evaluate"}


def test_py_modules_are_the_modules_the_entry_points_need():
    needed = needed_modules(ROOT, list(SCRIPTS.values()))
    assert not needed - PY_MODULES, (f"add {sorted(needed - PY_MODULES)} to [tool.setuptools] py-modules "
                                     "in pyproject.toml: the sr4rs-* commands import them")
    assert not PY_MODULES - needed, (f"[tool.setuptools] py-modules lists {sorted(PY_MODULES - needed)}, "
                                     "which no sr4rs-* command needs (or which no longer exist)")


def run(cmd: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The wheel, built offline from a copy of its files, installed with --no-deps --no-index into a venv
    of its own that sees this interpreter's packages (TensorFlow, GDAL, ...) but not the source tree;
    `run` runs a command in an empty folder with an environment without PYTHONPATH."""
    tmp = tmp_path_factory.mktemp("package")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2")
    src = tmp / "src"  # the build writes build/ and *.egg-info next to the sources: not in the repository
    src.mkdir()
    for name in ["pyproject.toml", PYPROJECT["project"]["readme"]] + [m + ".py" for m in PY_MODULES]:
        shutil.copy(os.path.join(ROOT, name), src / name)
    run([sys.executable, "-m", "pip", "--isolated", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(tmp / "dist"), str(src)], str(tmp), env)
    (wheel,) = (tmp / "dist").iterdir()

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], str(tmp), env)
    python = str(venv / "bin" / "python")
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], str(tmp),
               env).stdout.strip()
    with open(os.path.join(site, "sr4rs_test_deps.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    run([python, "-m", "pip", "--isolated", "install", "--no-deps", "--no-index", "-q", str(wheel)], str(tmp),
        env)
    work = tmp / "elsewhere"
    work.mkdir()
    return {"wheel": wheel, "bin": venv / "bin", "site": site, "work": work,
            "run": lambda *cmd: run([str(c) for c in cmd], str(work), env)}


@pytest.mark.slow
def test_the_wheel_holds_the_listed_modules_and_they_load_from_the_install(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert {n for n in names if "/" not in n} == {m + ".py" for m in PY_MODULES}
    assert all(n.endswith(".py") or ".dist-info/" in n for n in names), names
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    print(m, importlib.import_module(m).__file__)"
    found = installed["run"](installed["bin"] / "python", "-c", code, *sorted(PY_MODULES)).stdout
    files = dict(line.split(" ", 1) for line in found.splitlines())
    assert files == {m: os.path.join(installed["site"], m + ".py") for m in PY_MODULES}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(HELP_OPTION))
def test_each_entry_point_prints_its_help_outside_the_source_tree(installed, script):
    (command,) = run_modules(ROOT, SCRIPTS[script]) - {"cli"}
    help_text = installed["run"](installed["bin"] / script, "--help").stdout
    assert re.match(rf"usage: ({script}|{command}\.py) ", help_text), help_text[:200]
    assert HELP_OPTION[script] in help_text


@pytest.mark.slow
@pytest.mark.compat
def test_the_installed_commands_chain_extract_train_sr_evaluate(installed):
    """The whole workflow, tiny, through the installed sr4rs-* commands (`make test-compat` runs it on the
    OTBTF image's TensorFlow)."""
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 40, (192, 192, 4)), axis=0), axis=1) / 40
    hr = np.clip(smooth - smooth.min() + 100, 0, 10000).astype(np.int16)
    lr = hr.reshape(48, 4, 48, 4, 4).mean(axis=(1, 3)).astype(np.int16)
    work, bin_dir, run_in_work = installed["work"], installed["bin"], installed["run"]
    write_raster(str(work / "lr.tif"), lr, pixel_size=10.0)
    write_raster(str(work / "hr.tif"), hr, pixel_size=2.5)
    run_in_work(bin_dir / "sr4rs-extract", "--lr", "lr.tif", "--hr", "hr.tif", "--lr_patchsize", "8",
                "--step", "8", "--out_lr", "lr_patches.tif", "--out_hr", "hr_patches.tif", "--quiet")
    run_in_work(bin_dir / "sr4rs-train", "--lr_patches", "lr_patches.tif", "--hr_patches", "hr_patches.tif",
                "--save_ckpt", "ckpts/", "--savedmodel", "model", "--depth", "4", "--nresblocks", "1",
                "--epochs", "1", "--batchsize", "4", "--pretrain")
    run_in_work(bin_dir / "sr4rs-sr", "--input", "lr.tif", "--savedmodel", "model", "--output", "sr.tif",
                "--engine", "tf", "--ts", "64", "--pad", "32", "--quiet")
    run_in_work(bin_dir / "sr4rs-evaluate", "--sr", "sr.tif", "--ref", "hr.tif", "--lr", "lr.tif",
                "--out", "metrics.json", "--png", "quicklook.png")
    out = gdal.Open(str(work / "sr.tif"))
    assert (out.RasterXSize, out.RasterYSize, out.RasterCount) == (192, 192, 4)
    assert out.GetGeoTransform()[1] == 2.5
    with open(work / "metrics.json") as f:
        assert math.isfinite(json.load(f)["metrics"]["sr"]["psnr"])
    with open(work / "quicklook.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
