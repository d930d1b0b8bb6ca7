"""Print pip pins for the lower ends of pyproject.toml's ranges of JAX, jaxlib and NumPy (`jax>=X`
becomes `jax==X`): .ci/run installs them in a second venv, so the declared floor is the tested one."""
import re
import sys
import tomllib
from pathlib import Path

FLOORED = ("jax", "jaxlib", "numpy")

deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
pins = {}
for d in deps:
    m = re.match(r"^([A-Za-z0-9_.-]+)\s*(?:\[.*\])?\s*(.*)$", d)
    name, spec = m.group(1).lower(), m.group(2)
    low = re.search(r">=\s*([0-9][^,;\s]*)", spec)
    if name in FLOORED and low:
        pins[name] = low.group(1)
missing = [n for n in FLOORED if n not in pins]
if missing:
    sys.exit(f"pyproject.toml declares no lower bound (>=) for {missing}")
print("\n".join(f"{n}=={v}" for n, v in pins.items()))
