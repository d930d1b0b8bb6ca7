"""What a user sees besides the results: the CLI in a pipe and its help, the README's API signature,
the summary's symbols, ROOT's import noise, the Dask tutorial's log."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxpr2sofie as j2s

ROOT = Path(__file__).resolve().parents[1]


def test_cli_output_into_a_closed_pipe_is_no_traceback():
    """`jaxpr2sofie primitives | head`: the reader goes away before the table is written."""
    proc = subprocess.Popen([sys.executable, "-m", "jaxpr2sofie.cli", "primitives"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()   # closed before the CLI has even imported: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 141, (code, err)


def test_cli_in_a_shell_pipe_to_head():
    res = subprocess.run(f"'{sys.executable}' -m jaxpr2sofie.cli primitives | head -n 2", shell=True,
                         capture_output=True, text=True, timeout=300)
    assert res.stdout.splitlines()[0].startswith("| family"), res.stdout
    assert "Traceback" not in res.stderr, res.stderr


def test_top_level_help_lists_every_command():
    from jaxpr2sofie.cli import build_parser
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    res = subprocess.run([sys.executable, "-m", "jaxpr2sofie.cli", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    first = res.stdout.split("Command line:", 1)[1].splitlines()[0]
    assert sorted(re.findall(r"[a-z]+", first.split("jaxpr2sofie", 1)[1])) == sorted(commands), first


def test_readme_convert_signature_is_the_real_one():
    text = (ROOT / "README.md").read_text()
    line = re.search(r"^- `convert\((.*?)\)`:", text, re.M).group(1)
    documented = [p.split("=")[0].strip() for p in line.split(",")]
    assert documented == list(inspect.signature(j2s.convert).parameters), line


def test_summary_uses_N_only_for_the_batch():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    m = j2s.convert(lambda p, x: x @ p, w, np.zeros((4, 16), np.float32), batch="dynamic", progress=False)
    text = m.summary()
    assert "batch N chosen at run time" in text
    assert not re.search(r"\bN=", text) and "(N x 16) @ (16 x 8)" in text, text


def test_root_alpha_stage_warning_is_filtered_where_the_project_imports_root():
    import importlib.util   # looked up, not imported: ROOT stays out of this process (it holds JAX)
    if importlib.util.find_spec("ROOT") is None:
        pytest.skip("PyROOT is not installed: pip install 'jaxpr2sofie[root]'")
    code = "import jaxpr2sofie.root as r; r._root(); import ROOT; print(ROOT.gROOT.GetVersion())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "alpha stage" not in res.stderr, res.stderr


def test_readme_threads_section_names_real_things():
    """The threads section's harness call takes the converted model's graph, and the benchmark column it
    points at is one the table has."""
    text = (ROOT / "README.md").read_text()
    section = text.split("#### Threads over the batch")[1].split("\n- ")[0]
    assert "time_in_cpp(m.graph," in section and "`m.graph` is" in section, section
    column = re.search(r"the peer benchmark's `([^`]+)` column", section).group(1)
    table = text.split("<!-- bench-report:start -->")[1].split("```text")[1].split("```")[0]
    header = next(l for l in table.splitlines() if l.startswith("model "))
    assert column in header.split(), (column, header)
