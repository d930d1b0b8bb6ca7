"""The README, run top to bottom as a new user would: every Python, shell and C++ block, in order, as
written, in one fresh folder.

How blocks run (the README's own conventions, written as HTML comments a reader does not see):
- ```python: `python -c <block>` in the folder, one process per block (as pasting it would);
- ```bash: `bash -e -c <block>` in the folder;
- ```cpp: saved under the name its `<!-- readme-test: file NAME -->` marker gives; a later shell
  block of the README builds and runs it (a C++ block no shell block builds is an error here);
- a block after `<!-- readme-test: skip: REASON -->` is not run (installs, the test suite itself,
  the 16-minute benchmark, command synopses naming the user's own files); the reason is required.
- ```text and unlabelled blocks are output shown to the reader, not code.
The folder holds one thing the user's clone has: a link to the repository's `examples/`, which the
tutorial and CMake commands name. Everything a block writes lands in the folder, so the repository
root stays as it was.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.M | re.S)
_MARKER = re.compile(r"<!--\s*readme-test:\s*(skip|file)\s*:?\s*(.*?)\s*-->")


@dataclass
class Block:
    lang: str
    code: str
    line: int
    skip: str = ""     # the stated reason, when the README says not to run it
    file: str = ""     # a C++ block's file name


def readme_blocks(text: str) -> list:
    """The README's code blocks in order, each with its readme-test marker (from the comment lines
    directly above the fence)."""
    out = []
    for m in _FENCE.finditer(text):
        lang = m.group(1)
        if lang not in ("python", "bash", "cpp"):
            continue
        above = text[:m.start()].rstrip("\n").splitlines()
        b = Block(lang, m.group(2), text.count("\n", 0, m.start()) + 1)
        while above and above[-1].strip().startswith("<!--"):
            marker = _MARKER.search(above.pop())
            if marker and marker.group(1) == "skip":
                b.skip = marker.group(2)
            elif marker:
                b.file = marker.group(2)
        out.append(b)
    return out


def test_readme_blocks_are_marked_consistently():
    """Fast, no block runs: the markers the runner relies on are there and mean something."""
    blocks = readme_blocks(README.read_text())
    assert len(blocks) >= 15, "the README's code blocks were not found"
    text = README.read_text()
    markers = [l for l in text.splitlines() if l.strip().startswith("<!-- readme-test: skip")]
    assert len(markers) == sum(bool(b.skip) for b in blocks), \
        "a skip marker that is not directly above a code block"
    assert all(len(b.skip) > 10 for b in blocks if b.skip), "every skipped block states why"
    cpp = [b for b in blocks if b.lang == "cpp"]
    assert cpp and all(b.file for b in cpp), "every C++ block names its file (<!-- readme-test: file NAME -->)"
    for b in cpp:
        later = [o for o in blocks if o.lang == "bash" and o.line > b.line and not o.skip]
        assert any(b.file in o.code for o in later), f"no shell block after line {b.line} builds {b.file}"
    # the install command and the test suite are never run from inside the test suite
    setup = next(b for b in blocks if 'pip install -e ".[test]"' in b.code)
    assert setup.skip, "the set-up block must be marked skip"


def _tree(path: Path) -> set:
    """Top-level names and the names in out/: what a README run could leave in the repository."""
    names = {p.name for p in path.iterdir()}
    if (path / "out").is_dir():
        names |= {f"out/{p.name}" for p in (path / "out").iterdir()}
    return names


@pytest.mark.slow
def test_readme_runs_top_to_bottom(tmp_path):
    """Slow (about 4 minutes on the 2-core machine: a Flax CNN, Keras, real SOFIE, ROOT on a Dask
    cluster, CMake, two RDataFrame tutorials): it runs in the slow set, as CI does."""
    from helpers import require_tool
    require_tool("g++")
    require_tool("cmake")
    # looked up, not imported: ROOT and jaxlib are best kept out of one process, and Keras picks its
    # backend at import
    import importlib.util
    missing = [m for m in ("flax", "keras", "equinox", "haiku", "onnxruntime", "sofie", "ROOT", "distributed")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the README uses every extra, {missing} missing: pip install -e '.[test]'")
    if not shutil.which("root"):
        pytest.skip("the ROOT macro block needs `root` on the PATH (pip install -e '.[root]')")
    before = _tree(ROOT)
    work = tmp_path / "readme"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           # this checkout's package, whatever the venv has installed
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    ran = []
    for b in readme_blocks(README.read_text()):
        if b.skip:
            continue
        if b.lang == "cpp":
            (work / b.file).write_text(b.code)
            continue
        t0 = time.monotonic()
        cmd = [sys.executable, "-c", b.code] if b.lang == "python" else ["bash", "-e", "-o", "pipefail", "-c", b.code]
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, (f"README block at line {b.line} ({b.lang}) failed, after {len(ran)} blocks ran:\n"
                                     f"{b.code}\n--- stdout\n{res.stdout[-2000:]}\n--- stderr\n{res.stderr[-4000:]}")
        ran.append((b.line, round(time.monotonic() - t0, 1)))
    print("README blocks run (line, seconds):", ran)   # shown with -s or -rP: where the minutes go
    assert len(ran) >= 12, ran
    assert _tree(ROOT) == before, f"the README run left files in the repository: {_tree(ROOT) ^ before}"
