"""Static checks of the Dockerfile and .dockerignore (no Docker engine here: the image is never built).

What is checked: the base image is an OTBTF GPU image of version >= 4.0 (TensorFlow >= 2.12); every
project module the command-line tools need (their imports and the scripts they run, found with `ast`)
reaches the image through the COPY lines and .dockerignore; the documented `docker run` commands name
scripts that are in the image, have a `main(argv)`, and only options that the scripts define; nothing
the OTBTF image already has (TensorFlow, GDAL, numpy, OTB) is installed again; tests/, .venv, ... stay out.
"""
from __future__ import annotations

import ast
import os
import posixpath
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
ENTRY_POINTS = ("train.py", "sr.py", "extract_patches.py", "evaluate.py", "demo.py")
MUST_BE_DOCUMENTED = ("train.py", "sr.py", "extract_patches.py")
MIN_OTBTF = (4, 0)  # OTBTF 4.0.0 is the first release on TensorFlow 2.12
NOT_IN_IMAGE = ("tests/", "bench/", ".venv/", ".otb/", "demo_out/", ".git/")
ALREADY_IN_IMAGE = ("tensorflow", "tf-", "keras", "gdal", "python3-gdal", "libgdal", "osgeo", "numpy",
                    "python3-numpy", "otb", "libotb")
OTBTF_GPU = re.compile(r"^(?:[\w.\-]+(?::\d+)?/)*(?:mdl4eo/)?otbtf:"
                       r"(\d+)\.(\d+)(?:\.(\d+))?-gpu(?:-opt)?(?:-dev)?$")


# ---------------------------------------------------------------- Dockerfile and .dockerignore parsing
def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        word, _, rest = (buf + s).partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def comment_commands(text: str) -> list[str]:
    """Commands written in the Dockerfile's comments, continuation lines joined."""
    commands, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("#"):
            buf = ""
            continue
        s = s.lstrip("#").strip()
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        commands.append(buf + s)
        buf = ""
    return commands


def base_image(instrs: list[tuple[str, str]]) -> str:
    """The image of the last FROM, with the ARG defaults substituted."""
    args: dict[str, str] = {}
    image = ""
    for word, rest in instrs:
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip("\"'")
        elif word == "FROM":
            image = next(t for t in rest.split() if not t.startswith("--"))
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
    return image


def otbtf_gpu_version(image: str) -> tuple[int, ...] | None:
    """(major, minor[, patch]) of an OTBTF GPU image (mdl4eo/otbtf:4.3.1-gpu), None for anything else."""
    m = OTBTF_GPU.match(image)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def pattern_regex(pattern: str) -> re.Pattern:
    """Docker's path matching (Go filepath.Match, plus **): * and ? stop at '/', ** does not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            j = pattern.index("]", i)
            body = pattern[i + 1:j]
            out, i = out + "[" + ("^" + body[1:] if body[:1] in "^!" and body else body) + "]", j + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> list[tuple[bool, str, re.Pattern]]:
    """(negated, pattern, regex) for each .dockerignore line, in order."""
    rules = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        negated = s.startswith("!")
        s = posixpath.normpath(s.lstrip("!").strip()).lstrip("/")
        rules.append((negated, s, pattern_regex(s)))
    return rules


def excluded(path: str, rules: list[tuple[bool, str, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negated, _, regex in rules:
        if any(regex.match(c) for c in candidates):
            result = not negated
    return result


def context_files(root: str, rules: list[tuple[bool, str, re.Pattern]]) -> set[str]:
    """The files of the build context (paths relative to root, '/'-separated) after .dockerignore."""
    files = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # skip folders that are excluded and that no exception could reach into (.venv is big)
        dirnames[:] = [d for d in dirnames if not excluded(rel_dir + d, rules) or any(
            neg and (p.startswith(rel_dir + d + "/") or "**" in p) for neg, p, _ in rules)]
        files |= {rel_dir + f for f in filenames if not excluded(rel_dir + f, rules)}
    return files


def image_files(instrs: list[tuple[str, str]], context: set[str]) -> tuple[dict[str, str], str]:
    """({path in the image: context file} for the COPY/ADD lines of the last stage, final WORKDIR)."""
    copied: dict[str, str] = {}
    workdir = "/"
    for word, rest in instrs:
        if word == "FROM":
            copied, workdir = {}, "/"
        elif word == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, rest))
        elif word in ("COPY", "ADD"):
            tokens = shlex.split(rest)
            if any(t.startswith("--from") for t in tokens):
                continue
            *sources, dest = [t for t in tokens if not t.startswith("--")]
            target = posixpath.normpath(posixpath.join(workdir, dest))
            into_dir = dest.endswith("/") or dest in (".", "..") or len(sources) > 1
            for src in sources:
                src = posixpath.normpath(src).lstrip("/")
                if src == ".":
                    copied.update({posixpath.join(target, f): f for f in context})
                    continue
                regex = pattern_regex(src)
                for f in context:
                    if regex.match(f):  # a file: copied under its name into a folder
                        into = into_dir or any(c in src for c in "*?[")
                        copied[posixpath.join(target, posixpath.basename(f)) if into else target] = f
                    parts = f.split("/")
                    for i in range(1, len(parts)):  # a folder: its contents are copied
                        if regex.match("/".join(parts[:i])):
                            copied[posixpath.join(target, "/".join(parts[i:]))] = f
                            break
    return copied, workdir


# ---------------------------------------------------------------- what the tools need
def _tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def project_closure(root: str, entry_points: tuple[str, ...]) -> set[str]:
    """Top-level project modules (x.py) that the entry points import, directly or not, or run as
    scripts (a string constant "x.py" naming a top-level file, as demo.py runs demo_scene.py)."""
    top_level = {f for f in os.listdir(root) if f.endswith(".py") and os.path.isfile(os.path.join(root, f))}
    needed, todo = set(), list(entry_points)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        for node in ast.walk(_tree(os.path.join(root, name))):
            if isinstance(node, ast.Import):
                found = {a.name.split(".")[0] + ".py" for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = {node.module.split(".")[0] + ".py"}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found = {node.value}
            else:
                continue
            todo.extend(sorted((found & top_level) - needed))
    return needed


def cli_options(path: str) -> tuple[set[str], set[str]]:
    """(every "--option" string of a script, the options its add_argument calls mark required=True)."""
    tree = _tree(path)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    options = {s for s in strings if re.fullmatch(r"--[\w-]+", s)}
    required = set()
    for n in ast.walk(tree):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"
                and any(k.arg == "required" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in n.keywords)):
            required |= {a.value for a in n.args
                         if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return options, required


def has_main(path: str) -> bool:
    """A top-level `def main(argv...)` and an `if __name__ == "__main__":` block."""
    tree = _tree(path)
    main = any(isinstance(n, ast.FunctionDef) and n.name == "main" and n.args.args for n in tree.body)
    guard = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
    return main and guard


def reinstalls(run: str, pins: dict[str, str]) -> list[str]:
    """Problems of the install commands of a RUN line: a package the OTBTF image already has, a
    requirements file, a pip install without --no-deps or not pinned as in requirements.txt."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    problems = []
    for cmd in commands:
        cmd = cmd[1:] if cmd[:1] == ["sudo"] else cmd
        if "install" not in cmd:
            continue
        pip = cmd[:1] in (["pip"], ["pip3"]) or (
            cmd[:1] != [] and cmd[0].startswith("python") and cmd[1:3] == ["-m", "pip"])
        if not (pip or cmd[:1] in (["apt-get"], ["apt"], ["conda"], ["mamba"], ["micromamba"])):
            continue
        args = cmd[cmd.index("install") + 1:]
        if any(a in ("-r", "--requirement") or a.startswith("--requirement=") for a in args):
            problems.append(f"{' '.join(cmd)}: installs a requirements file")
        packages = [a for i, a in enumerate(args)
                    if not a.startswith("-") and args[i - 1:i] not in (["-r"], ["-c"])]
        for pkg in packages:
            name = re.split(r"[<>=!~\[;@ ]", pkg)[0].lower().replace("_", "-")
            if name.startswith(ALREADY_IN_IMAGE):
                problems.append(f"{pkg}: already in the OTBTF image")
            elif pip and "==" not in pkg:
                problems.append(f"{pkg}: not pinned")
            elif pip and name in pins and pkg.split("==")[1] != pins[name]:
                problems.append(f"{pkg}: requirements.txt pins {name}=={pins[name]}")
        if pip and packages and "--no-deps" not in args:
            problems.append(f"{' '.join(cmd)}: pip install without --no-deps")
    return problems


def requirement_pins() -> dict[str, str]:
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [s.split("#")[0].strip() for s in f]
    return {s.split("==")[0].lower().replace("_", "-"): s.split("==")[1] for s in lines if "==" in s}


# ---------------------------------------------------------------- the project's files
@pytest.fixture(scope="module")
def dockerfile() -> str:
    with open(DOCKERFILE, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def image(dockerfile: str) -> tuple[dict[str, str], str]:
    with open(DOCKERIGNORE, encoding="utf-8") as f:
        rules = ignore_rules(f.read())
    return image_files(instructions(dockerfile), context_files(ROOT, rules))


def test_base_image_is_an_otbtf_gpu_image_with_tensorflow_2_12_or_later(dockerfile: str) -> None:
    image = base_image(instructions(dockerfile))
    version = otbtf_gpu_version(image)
    assert version is not None, f"FROM {image}: not a pinned OTBTF GPU image (mdl4eo/otbtf:X.Y.Z-gpu)"
    assert version[:2] >= MIN_OTBTF, f"FROM {image}: OTBTF < 4.0 ships TensorFlow < 2.12"


@pytest.mark.parametrize("image, expected", [
    ("mdl4eo/otbtf:4.3.1-gpu", (4, 3, 1)), ("mdl4eo/otbtf:4.2.2-gpu-dev", (4, 2, 2)),
    ("gitlab.irstea.fr/remi.cresson/otbtf/container_registry/otbtf:4.2.2-gpu-opt", (4, 2, 2)),
    ("mdl4eo/otbtf:4.3.1-cpu", None), ("mdl4eo/otbtf:latest-gpu", None), ("ubuntu:22.04", None),
    ("mdl4eo/otbtf:3.3.0-gpu", (3, 3, 0)),
])
def test_otbtf_gpu_version_parsing(image: str, expected: tuple[int, ...] | None) -> None:
    assert otbtf_gpu_version(image) == expected


def test_base_image_resolves_arg_defaults() -> None:
    instrs = instructions("ARG TAG=4.3.1-gpu\nFROM mdl4eo/otbtf:${TAG} AS base\n")
    assert base_image(instrs) == "mdl4eo/otbtf:4.3.1-gpu"


def test_project_closure_follows_imports_and_scripts(tmp_path) -> None:
    files = {"a.py": "import os, b\ndef f():\n    from c import x\n    run(['python', 'd.py'])\n",
             "b.py": "import numpy\n", "c.py": "import e as _\n", "d.py": "", "e.py": "", "unused.py": ""}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert project_closure(str(tmp_path), ("a.py",)) == {"a.py", "b.py", "c.py", "d.py", "e.py"}


def test_every_module_the_tools_need_is_copied_next_to_them(image: tuple[dict[str, str], str]) -> None:
    copied, workdir = image
    needed = project_closure(ROOT, ENTRY_POINTS)
    assert needed > set(ENTRY_POINTS) and "errors.py" in needed
    where = {src: posixpath.dirname(dst) for dst, src in copied.items()}
    missing = sorted(needed - where.keys())
    assert not missing, f"not copied into the image (COPY lines or .dockerignore): {missing}"
    folders = {where[m] for m in needed}
    assert folders == {workdir}, f"the tools and their modules must sit together in {workdir}: {folders}"
    assert workdir != "/"


def test_copy_simulation_notices_a_missing_module() -> None:
    context = {"train.py", "errors.py", "tests/test_x.py", "scripts/build.sh"}
    copied, workdir = image_files(instructions("FROM x\nWORKDIR /app\nCOPY train.py ./\nCOPY scripts/ s/\n"),
                                  context)
    assert copied == {"/app/train.py": "train.py", "/app/s/build.sh": "scripts/build.sh"}
    assert workdir == "/app"
    copied, _ = image_files(instructions("FROM x\nWORKDIR /app\nCOPY *.py ./\n"), context)
    assert set(copied.values()) == {"train.py", "errors.py"}


def test_tests_venv_and_outputs_stay_out_of_the_image(image: tuple[dict[str, str], str]) -> None:
    with open(DOCKERIGNORE, encoding="utf-8") as f:
        rules = ignore_rules(f.read())
    for path in ("tests/test_sr.py", "tests/conftest.py", ".venv/bin/python", ".otb/apps/x.so", ".git/config",
                 "demo_out/metrics.json", "bench/bench_sr.py", "__pycache__/sr.cpython-310.pyc"):
        assert excluded(path, rules), f".dockerignore lets {path} into the build context"
    for path in ("train.py", "sr.py", "requirements.txt", "README.md", "Makefile", "scripts/build_otbtf.sh"):
        assert not excluded(path, rules), f".dockerignore keeps {path} out of the build context"
    copied, _ = image
    leaked = sorted(src for src in copied.values() if src.startswith(NOT_IN_IMAGE))
    assert not leaked, f"copied into the image: {leaked}"
    whitelist = ignore_rules("*\n!*.py\n")
    assert excluded("tests/x.py", whitelist) and not excluded("x.py", whitelist)


def test_documented_docker_run_commands_work(dockerfile: str, image: tuple[dict[str, str], str]) -> None:
    copied, workdir = image
    commands = [shlex.split(c) for c in comment_commands(dockerfile) if c.startswith("docker ")]
    assert commands, "no docker command documented in the Dockerfile's comments"
    build = [c for c in commands if c[1] == "build"]
    assert build and "-t" in build[0], "document the build command: docker build -t NAME ."
    tag = build[0][build[0].index("-t") + 1]
    runs = [c for c in commands if c[1] == "run" and tag in c]
    documented = set()
    for run in runs:
        command = run[run.index(tag) + 1:]
        if command[0] not in ("python", "python3"):
            continue
        assert "--gpus" in run and run[run.index("--gpus") + 1] == "all", shlex.join(run)
        assert "-v" in run or "--volume" in run, f"no volume for the data: {shlex.join(run)}"
        script = posixpath.normpath(posixpath.join(workdir, command[1]))
        assert script in copied, f"{command[1]} is not in the image (WORKDIR {workdir})"
        source = os.path.join(ROOT, copied[script])
        assert has_main(source), f"{copied[script]} has no main(argv) and __main__ block"
        defined, required = cli_options(source)
        used = {t.split("=")[0] for t in command[2:] if t.startswith("--")}
        assert used <= defined, f"{copied[script]} has no option {sorted(used - defined)}"
        assert required <= used, f"{copied[script]} also requires {sorted(required - used)}"
        documented.add(copied[script])
    undocumented = set(MUST_BE_DOCUMENTED) - documented
    assert not undocumented, f"no docker run command for {sorted(undocumented)}"


def test_nothing_the_image_has_is_installed_again(dockerfile: str) -> None:
    pins = requirement_pins()
    runs = [rest for word, rest in instructions(dockerfile) if word == "RUN"]
    problems = [p for run in runs for p in reinstalls(run, pins)]
    assert not problems, problems


@pytest.mark.parametrize("run, flagged", [
    ("pip install tensorflow==2.14.0", True),
    ("apt-get update && sudo apt-get install -y python3-gdal", True),
    ("python3 -m pip install --no-deps numpy==1.26.4", True),
    ("pip3 install --no-deps 'gdal==3.8.4'", True),
    ("pip install -r requirements.txt", True),
    ("pip install tqdm", True),
    ("pip install tqdm==4.67.1", True),
    ("pip install --no-deps tqdm==4.0.0", True),
    ("pip install --no-deps tqdm==4.67.1", False),
    ('python -c "import tensorflow; import numpy" && echo install', False),
])
def test_reinstall_detection(run: str, flagged: bool) -> None:
    assert bool(reinstalls(run, {"tqdm": "4.67.1"})) == flagged
