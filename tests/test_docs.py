"""The docs stay true: every Python block of the README and every script in ``examples/`` runs
as written, in a fresh interpreter, with a deadline.

README blocks name their root (``root="myapp"``...); each run gets a root of its own instead
(the only change made to the text), and every file under it is removed afterwards. Examples
take ``--root`` and must leave nothing behind under it.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import shm_files

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 120


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each fenced ``python`` block (indented ones included)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```python\s*$", lines[i])
        if m:
            indent, start = m.group(1), i + 1
            j = start
            while not re.match(rf"^{indent}```\s*$", lines[j]):
                j += 1
            blocks.append((start + 1, textwrap.dedent("\n".join(lines[start:j]))))
            i = j
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text())


def run(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 5, [line for line, _ in BLOCKS]


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_runs(line: int, code: str, root: str, tmp_path: pathlib.Path) -> None:
    code = re.sub(r"""root=(["'])[A-Za-z0-9_.]+\1""", f'root="{root}"', code)
    r = run(["-c", code], tmp_path)
    assert r.returncode == 0, f"README.md line {line} failed:\n{code}\n---\n{r.stdout}\n{r.stderr}"


def test_there_are_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"queue_pipeline", "api_server_client", "memif_pair", "netmap_pipe"} <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_and_cleans_up(
    script: pathlib.Path, root: str, tmp_path: pathlib.Path
) -> None:
    r = run([str(script), "--root", root], tmp_path)
    assert r.returncode == 0, f"{script.name} failed:\n{r.stdout}\n{r.stderr}"
    assert r.stdout.strip(), f"{script.name} printed nothing"
    left = shm_files(root)
    assert not left, f"{script.name} left {left} behind"
