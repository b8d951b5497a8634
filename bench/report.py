"""Write a benchmark's table into docs/benchmarks.md, in its own section, with the command
that produced it and the machine it ran on (re-running replaces only that section)."""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery table is written by a script in `bench/`; re-run it to refresh.\n"


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} cores, {mem:.0f} GiB, "
            f"Python {platform.python_version()}")


def write_section(name: str, title: str, body: str, doc: Path = DOC) -> None:
    command = "python " + " ".join(sys.argv)
    section = (f"<!-- bench:{name} -->\n## {title}\n\n"
               f"Command: `{command}`  \nMachine: {machine()}  \n"
               f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
               f"{body.strip()}\n<!-- /bench:{name} -->\n")
    header = HEADER if doc == DOC else f"# {doc.stem.capitalize()}\n\nEvery table is " \
        "written by a script in `bench/`; re-run it to refresh.\n"
    text = doc.read_text() if doc.exists() else header
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + "\n" + section
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(text)
    print(section)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
