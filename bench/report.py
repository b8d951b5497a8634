"""Write a benchmark's table into docs/benchmarks.md, in its own section, with the command
that produced it and the machine it ran on (re-running replaces only that section)."""

from __future__ import annotations

import argparse
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


def campaign_args() -> argparse.Namespace:
    """The command line of a script that reads a finished campaign: its results folder, and
    what the numbers say (appended to the section's text)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--note", default="", help="what the numbers say, appended to the text")
    return ap.parse_args()


def figure(size: tuple[float, float]):
    """A new figure and its axes, drawn off-screen (benchmarks run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def save_figure(fig, ax, path: Path, dpi: int = 130, **legend) -> None:
    """Grid, legend, tight layout; write the figure to `path` and free it."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(**legend)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
