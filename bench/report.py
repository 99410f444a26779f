"""Write one benchmark's results into its own section of BENCHMARKS.md (other sections are kept)."""
from __future__ import annotations

import datetime
import os
import platform
import re

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BENCHMARKS.md")
HEADER = "# SR4RS benchmarks\n\nWritten by the scripts under `bench/`; each section says how to re-run it.\n"


def machine() -> str:
    """One line describing where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{names[0]} x {len(names)}" if names else cpu
    except OSError:
        pass
    return f"{datetime.date.today().isoformat()}, {cpu}, Python {platform.python_version()}"


def write_section(name: str, markdown: str, path: str = BENCHMARKS) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md with `markdown`."""
    text = open(path).read() if os.path.exists(path) else HEADER
    block = f"<!-- {name} -->\n{markdown.strip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
