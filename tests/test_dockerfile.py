"""Static checks of the Dockerfile and .dockerignore (no Docker engine here: the image is never built).

What is checked: the base image is an OTBTF GPU image of version >= 4.0 (TensorFlow >= 2.12); every
project file the command-line tools need (their imports, packages such as demo/ included, and the scripts
and `-m` modules they run, found with `ast`) reaches the image through the COPY lines and .dockerignore,
at the same place relative to the working directory; the `docker run` commands documented in the
Dockerfile and in README.md run scripts or `-m` modules that are in the image, have a `main(argv)`, and
use only options that their command defines; nothing the OTBTF image already has (TensorFlow, GDAL,
numpy, OTB) is installed again; tests/, .venv, ... stay out.
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
README = os.path.join(ROOT, "README.md")
# The commands: the four scripts and the demo (`python -m demo`).
ENTRY_POINTS = ("train.py", "sr.py", "extract_patches.py", "evaluate.py", "demo/__main__.py")
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


def readme_commands(text: str) -> list[str]:
    """Commands written in README.md: the lines of its code blocks (continuation lines joined) and its
    inline code spans."""
    commands, buf, in_block = [], "", False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block, buf = not in_block, ""
        elif in_block and line.rstrip().endswith("\\"):
            buf += line.strip()[:-1].rstrip() + " "
        elif in_block:
            commands.append(buf + line.strip())
            buf = ""
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    return commands + [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", outside)]


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


def python_files(root: str) -> set[str]:
    """The .py files below root ('/'-separated paths relative to it), hidden folders left out."""
    files = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        files |= {posixpath.normpath(posixpath.join(rel_dir, f)) for f in filenames if f.endswith(".py")}
    return files


def module_files(files: set[str], name: str, run: bool = False) -> list[str]:
    """The files among `files` that importing module `name` (a.b.c) executes: the __init__.py of each
    package on the way, then the module's file; with run (`python -m name`), a package's __main__.py
    instead of its __init__.py. [] when `name` is not one of these modules (e.g. numpy)."""
    parts = name.split(".")
    found = []
    for i in range(1, len(parts) + 1):
        path = "/".join(parts[:i])
        if i == len(parts) and path + ".py" in files:
            return found + [path + ".py"]
        if path + "/__init__.py" not in files:
            return []
        found.append(path + "/__init__.py")
    main = found[-1].replace("__init__.py", "__main__.py")
    return found + [main] if run and main in files else found


def imported_modules(node: ast.AST, package: str) -> list[str]:
    """The modules an import statement may load (`from a import b`: a, and a.b in case b is a
    submodule); `package` is the importing file's package, for relative imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    module = node.module or ""
    if node.level:
        base = package.split(".") if package else []
        module = ".".join(base[:len(base) - node.level + 1] + ([module] if module else []))
    return [module] + [f"{module}.{alias.name}".lstrip(".") for alias in node.names]


def project_closure(root: str, entry_points: tuple[str, ...]) -> set[str]:
    """Project files (paths relative to root) that the entry points import, directly or not, or run:
    imports (relative ones and packages' __init__.py too), a string constant "x.py" naming a project file
    (as demo/run.py runs "extract_patches.py" from the repository root), and a "-m", "module" pair in a
    list or tuple of constants (as demo/run.py runs [python, "-m", "demo.scene", ...])."""
    files = python_files(root)
    needed, todo = set(), list(entry_points)
    while todo:
        path = todo.pop()
        if path in needed:
            continue
        needed.add(path)
        package = posixpath.dirname(path).replace("/", ".")
        found: list[str] = []
        for node in ast.walk(_tree(os.path.join(root, path))):
            for module in imported_modules(node, package):
                found += module_files(files, module)
            if isinstance(node, ast.Constant) and node.value in files:
                found.append(node.value)
            elif isinstance(node, ast.List | ast.Tuple):
                values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
                for flag, module in zip(values, values[1:], strict=False):
                    if flag == "-m" and isinstance(module, str):
                        found += module_files(files, module, run=True)
        todo.extend(sorted(set(found) - needed))
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


def _defines_main(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" and n.args.args for n in tree.body)


def main_source(root: str, path: str) -> str | None:
    """The project file whose `main(argv)` running `path` calls: `path` itself when it has a top-level
    `def main(argv...)` and an `if __name__ == "__main__":` block; for a file that only imports main
    (`from module import main`, as demo/__main__.py does) and calls it at its top level, that module's
    file when it defines main(argv). None otherwise."""
    tree = _tree(os.path.join(root, path))
    if _defines_main(tree):
        guard = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
        return path if guard else None
    top_level_calls = [x for n in tree.body if isinstance(n, ast.Expr) for x in ast.walk(n)]
    if not any(isinstance(x, ast.Name) and x.id == "main" for x in top_level_calls):
        return None
    package = posixpath.dirname(path).replace("/", ".")
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and any(a.name == "main" and not a.asname for a in n.names):
            source = module_files(python_files(root), imported_modules(n, package)[0])
            return source[-1] if source and _defines_main(_tree(os.path.join(root, source[-1]))) else None
    return None


def reinstalls(run: str, pins: dict[str, str]) -> list[str]:
    """Problems of the install commands of a RUN line: a package the OTBTF image already has, a
    requirements file, a pip install not pinned as in requirements.txt, or free to change the image's
    packages: neither --no-deps nor constrained (-c FILE) to the versions `pip freeze > FILE` listed in the
    same RUN line."""
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
        constraints = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--constraint")]
        frozen = any(re.search(rf"pip freeze\s*>\s*{re.escape(c)}(\s|$)", run) for c in constraints)
        if pip and packages and "--no-deps" not in args and not frozen:
            problems.append(f"{' '.join(cmd)}: pip install without --no-deps or the image's versions frozen")
    return problems


def requirement_pins() -> dict[str, str]:
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [s.split("#")[0].strip() for s in f]
    return {s.split("==")[0].split("[")[0].lower().replace("_", "-"): s.split("==")[1]
            for s in lines if "==" in s}


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


def write_files(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_project_closure_follows_imports_packages_and_scripts(tmp_path) -> None:
    write_files(tmp_path, {
        "a.py": "import os, b\ndef f():\n    from c import x\n    run(['python', 'd.py'])\n",
        "b.py": "import numpy\n", "c.py": "import e as _\n", "d.py": "", "e.py": "", "unused.py": "",
        "g.py": "import pkg.run\nCOMMAND = ('python', '-m', 'pkg.sub.tool', '--out', 'x')\n",
        "pkg/__init__.py": "", "pkg/__main__.py": "from pkg.run import main\nmain()\n",
        "pkg/run.py": "from . import helper\nfrom pkg import sub\n", "pkg/helper.py": "import h\n",
        "pkg/sub/__init__.py": "", "pkg/sub/tool.py": "from ..helper import x\n", "pkg/unused.py": "",
        "h.py": "", "runs_pkg.py": "run(['python', '-m', 'pkg'])\n", "tests/test_x.py": "import a\n"})
    assert project_closure(str(tmp_path), ("a.py",)) == {"a.py", "b.py", "c.py", "d.py", "e.py"}
    assert project_closure(str(tmp_path), ("g.py",)) == {
        "g.py", "pkg/__init__.py", "pkg/run.py", "pkg/helper.py", "h.py", "pkg/sub/__init__.py",
        "pkg/sub/tool.py"}
    assert project_closure(str(tmp_path), ("runs_pkg.py",)) == {
        "runs_pkg.py", "pkg/__main__.py", "pkg/__init__.py", "pkg/run.py", "pkg/helper.py", "h.py",
        "pkg/sub/__init__.py"}


def test_main_source_follows_a_package_main(tmp_path) -> None:
    write_files(tmp_path, {
        "pkg/__init__.py": "", "pkg/__main__.py": "import sys\nfrom pkg.run import main\nsys.exit(main())\n",
        "pkg/run.py": "def main(argv=None):\n    return 0\n",
        "script.py": "def main(argv=None):\n    pass\nif __name__ == '__main__':\n    main()\n",
        "no_guard.py": "def main(argv=None):\n    pass\n",
        "other/__main__.py": "from pkg.run import helper\nhelper()\n"})
    root = str(tmp_path)
    assert main_source(root, "pkg/__main__.py") == "pkg/run.py"
    assert main_source(root, "script.py") == "script.py"
    assert main_source(root, "no_guard.py") is None
    assert main_source(root, "other/__main__.py") is None


def test_every_file_the_tools_need_is_copied_at_its_place(image: tuple[dict[str, str], str]) -> None:
    copied, workdir = image
    needed = project_closure(ROOT, ENTRY_POINTS)
    assert needed > set(ENTRY_POINTS) and {"errors.py", "demo/run.py", "demo/pairs.py"} <= needed
    assert workdir != "/"
    needed.add("demo/data/landsat8_rgb_30m_crop.tif")  # the demo's image
    misplaced = sorted(f for f in needed if copied.get(posixpath.join(workdir, f)) != f)
    assert not misplaced, (f"not copied into the image at {workdir}/<path in the repository> (COPY lines "
                           f"or .dockerignore): {misplaced}")


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
                 "demo_out/metrics.json", "bench/bench_sr.py", "__pycache__/sr.cpython-310.pyc",
                 "demo/__pycache__/run.cpython-310.pyc", "docs/DESIGN.md"):
        assert excluded(path, rules), f".dockerignore lets {path} into the build context"
    for path in ("train.py", "sr.py", "demo/run.py", "requirements.txt", "README.md", "Makefile",
                 "scripts/build_otbtf.sh"):
        assert not excluded(path, rules), f".dockerignore keeps {path} out of the build context"
    copied, _ = image
    leaked = sorted(src for src in copied.values() if src.startswith(NOT_IN_IMAGE))
    assert not leaked, f"copied into the image: {leaked}"
    whitelist = ignore_rules("*\n!*.py\n")
    assert excluded("tests/x.py", whitelist) and not excluded("x.py", whitelist)


def check_docker_runs(commands: list[str], copied: dict[str, str], workdir: str) -> set[str]:
    """Check the `docker run` commands of the image built by the `docker build -t` among `commands` that
    run a script (python x.py) or a module (python -m x.y); return the project files they run."""
    commands = [shlex.split(c) for c in commands if c.startswith("docker ")]
    build = [c for c in commands if c[1] == "build" and "-t" in c]
    assert build, "document the build command: docker build -t NAME ."
    tag = build[0][build[0].index("-t") + 1]
    in_workdir = {posixpath.relpath(dst, workdir) for dst in copied if dst.startswith(workdir + "/")}
    ran = set()
    for run in (c for c in commands if c[1] == "run" and tag in c):
        command = run[run.index(tag) + 1:]
        if command[0] not in ("python", "python3"):
            continue
        assert "--gpus" in run and run[run.index("--gpus") + 1] == "all", shlex.join(run)
        assert "-v" in run or "--volume" in run, f"no volume for the data: {shlex.join(run)}"
        if command[1] == "-m":
            target, args = module_files(in_workdir, command[2], run=True), command[3:]
            assert target, f"python -m {command[2]}: no such module in the image (WORKDIR {workdir})"
            script = posixpath.join(workdir, target[-1])
        else:
            script, args = posixpath.normpath(posixpath.join(workdir, command[1])), command[2:]
            assert script in copied, f"{command[1]} is not in the image (WORKDIR {workdir})"
        source = main_source(ROOT, copied[script])
        assert source, f"{copied[script]}: no main(argv) called by a __main__ block or at the top level"
        defined, required = cli_options(os.path.join(ROOT, source))
        used = {t.split("=")[0] for t in args if t.startswith("--")}
        assert used <= defined, f"{shlex.join(command)}: {source} has no option {sorted(used - defined)}"
        assert required <= used, f"{shlex.join(command)}: {source} also requires {sorted(required - used)}"
        ran.add(copied[script])
    return ran


def test_docker_run_commands_of_the_dockerfile_work(dockerfile: str,
                                                    image: tuple[dict[str, str], str]) -> None:
    ran = check_docker_runs(comment_commands(dockerfile), *image)
    missing = set(MUST_BE_DOCUMENTED) - ran
    assert not missing, f"no docker run command for {sorted(missing)} in the Dockerfile's comments"


def test_docker_run_commands_of_the_readme_work(image: tuple[dict[str, str], str]) -> None:
    with open(README, encoding="utf-8") as f:
        ran = check_docker_runs(readme_commands(f.read()), *image)
    missing = set(MUST_BE_DOCUMENTED) - ran
    assert not missing, f"no docker run command for {sorted(missing)} in README.md"


def test_readme_commands_are_code_blocks_and_inline_code() -> None:
    text = ("Run `docker run --rm -v x:/data sr4rs\n  python -m demo` then:\n\n```\ndocker build -t sr4rs .\n"
            "docker run sr4rs python sr.py \\\n  --input /data/x.tif\n```\nor `make demo`.\n")
    assert readme_commands(text) == ["docker build -t sr4rs .",
                                     "docker run sr4rs python sr.py --input /data/x.tif",
                                     "docker run --rm -v x:/data sr4rs python -m demo", "make demo"]


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
    ("pip freeze > /tmp/c.txt && pip install -c /tmp/c.txt tqdm==4.67.1", False),
    ("pip freeze > /tmp/c.txt && pip install -c /tmp/other.txt tqdm==4.67.1", True),
    ("pip install -c /tmp/c.txt tqdm==4.67.1", True),
    ('python -c "import tensorflow; import numpy" && echo install', False),
])
def test_reinstall_detection(run: str, flagged: bool) -> None:
    assert bool(reinstalls(run, {"tqdm": "4.67.1"})) == flagged
