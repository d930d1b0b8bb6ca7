"""The README's generated parts and commands stay true."""
from pathlib import Path

from jaxpr2sofie.cli import primitive_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_primitive_table_matches_registry():
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- primitives:start -->")[1].split("<!-- primitives:end -->")[0].strip()
    assert block == primitive_table(), "README table is stale: paste the output of `jaxpr2sofie primitives`"


def test_ci_runs_the_readme_test_command():
    ci = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert ci[-1] == "python -m pytest tests"
    assert 'pip install -e ".[test]" && python -m pytest tests' in (ROOT / "README.md").read_text()
