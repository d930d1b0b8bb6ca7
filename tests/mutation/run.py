"""Mutation check: does the suite notice deliberate faults?

    python tests/mutation/run.py            # every fault
    python tests/mutation/run.py infer_outputs_swapped tanh_off_by_0.1%

For each fault, in a temporary copy of the repository (tracked and untracked, not ignored, files),
replace one piece of source text, run the fault's few chosen tests, and record which of them fail.
A baseline run of every chosen test on the unchanged copy must pass first. Prints a table; exits
non-zero when a fault is caught by none of its tests, when the baseline fails, or when a fault's
text is not found exactly once (the code it targets has changed: update FAULTS).

Faults are data -- (file, text to find, replacement) -- and survive the package being reorganised:
when `file` no longer exists, or no longer holds the text, the one file under jaxpr2sofie/ that
holds it is used (and named in the table). Not collected by pytest (no test_ prefix); it runs for
several minutes, a fresh compile cache per run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# name -> (file, text to find, replacement, [pytest selections, each a list of arguments])
FAULTS = {
    "tanh_off_by_0.1%": (
        "jaxpr2sofie/cpp/vmath.py",
        "vm_pick(a < 0.625f, a + a * s * p, (1.f - t) / (1.f + t))",
        "vm_pick(a < 0.625f, a + a * s * p, (1.f - t) / (1.f + t) * 1.001f)",
        [["tests/test_primitives.py", "-k", "test_case_matches_jax and tanh"],
         ["tests/test_flax.py", "-k", "mlp"]]),
    "conv_padding_swapped": (
        "jaxpr2sofie/primitives/conv.py",
        "padding=tuple((int(lo), int(hi)) for lo, hi in padding)",
        "padding=tuple((int(hi), int(lo)) for lo, hi in padding)",
        [["tests/test_primitives.py", "-k", "test_case_matches_jax and conv2d_explicit_padding"],
         ["tests/fuzz/test_fuzz.py", "-k", "test_random_programs_match_jax and conv"]]),
    "infer_outputs_swapped": (
        "jaxpr2sofie/cpp/emit.py",
        "w.line(f\"return {{{', '.join(f'std::move(out_{o})' for o in g.outputs)}}};\")",
        "w.line(f\"return {{{', '.join(f'std::move(out_{o})' for o in [*g.outputs[1::-1], *g.outputs[2:]])}}};\")",
        [["tests/test_cpp_outputs.py", "-k", "infer"],
         ["tests/test_cpp_session.py"]]),
    "slice_view_offset_off_by_one": (
        "jaxpr2sofie/ir/ops/movement.py",
        "            off += a * s\n",
        "            off += a * s + (a > 0)\n",
        [["tests/test_primitives.py", "-k", "test_case_matches_jax and slice_"],
         ["tests/fuzz/test_fuzz.py", "-k", "test_random_programs_match_jax and movement"]]),
    "dynamic_slice_start_off_by_one": (
        "jaxpr2sofie/cpp/ops/gather.py",
        'w.line(f"{v} = {v} < 0 ? 0 : ({v} > {top} ? {top} : {v});")',
        'w.line(f"{v} = {v} < 0 ? 0 : ({v} >= {top} ? {top} : {v} + 1);")',
        [["tests/test_primitives.py", "-k", "test_case_matches_jax and dynamic_slice_runtime"],
         ["tests/fuzz/test_fuzz.py", "-k", "test_random_programs_match_jax and slices"]]),
    "scan_last_step_skipped": (
        "jaxpr2sofie/cpp/ops/control.py",
        'w.block(f"for (size_t {t} = 0; {t} < {op.length}; ++{t})")',
        'w.block(f"for (size_t {t} = 0; {t} + 1 < {op.length}; ++{t})")',
        [["tests/test_primitives.py", "-k", "test_case_matches_jax and (scan_rnn or fori_loop_counted)"],
         ["tests/test_control_flow.py"]]),
    "gemm_bias_dropped": (
        "jaxpr2sofie/cpp/kernels.py",
        "out[i][j] + (bias ? bias[j] : 0.f)",
        "out[i][j] + 0.f",
        [["tests/test_primitives.py", "-k", "test_case_matches_jax and dot_general_dense"],
         ["tests/test_keras.py", "-k", "mlp"]]),
}


def copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def locate(root: Path, path: str, text: str) -> Path:
    """The file that holds `text` exactly once: `path`, or else the one such file in the package."""
    p = root / path
    if p.is_file() and p.read_text().count(text) == 1:
        return p
    hits = [f for f in (root / "jaxpr2sofie").rglob("*.py") if text in f.read_text()]
    if len(hits) != 1 or hits[0].read_text().count(text) != 1:
        raise SystemExit(f"fault text not found exactly once (in {path}: "
                         f"{p.read_text().count(text) if p.is_file() else 'no such file'}; elsewhere in "
                         f"jaxpr2sofie/: {[str(h.relative_to(root)) for h in hits]}):\n{text}\nUpdate FAULTS.")
    return hits[0]


def pytest(root: Path, selection) -> tuple[bool, float, str]:
    """(passed, seconds, last lines) of one pytest run in the copy, with a fresh compile cache."""
    env = dict(os.environ, PYTHONPATH=str(root), JAXPR2SOFIE_CACHE=tempfile.mkdtemp(prefix="j2s-mut-cache-"))
    t = time.time()
    res = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection],
                         cwd=root, env=env, capture_output=True, text=True)
    shutil.rmtree(env["JAXPR2SOFIE_CACHE"], ignore_errors=True)
    tail = res.stdout.strip().splitlines()[-1:] or [res.stderr.strip()[-200:]]
    # exit 5 (nothing collected) is turned into 0 by tests/conftest.py: a selection must run tests
    ran = " passed" in res.stdout or " failed" in res.stdout
    assert ran, f"selection {selection} ran no test: {res.stdout[-500:]}{res.stderr[-500:]}"
    return res.returncode == 0, time.time() - t, tail[0]


def main(names) -> int:
    faults = {n: FAULTS[n] for n in (names or FAULTS)}
    with tempfile.TemporaryDirectory(prefix="j2s-mutation-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        for name, (path, find, _, _) in faults.items():   # every fault's text first: fail before any run
            locate(root, path, find)
        selections = {tuple(s) for *_, sels in faults.values() for s in sels}
        print(f"baseline: {len(selections)} selections on the unchanged copy", flush=True)
        for sel in sorted(selections):
            ok, secs, tail = pytest(root, sel)
            print(f"  {'pass' if ok else 'FAIL'} {secs:5.0f} s  {' '.join(sel)}  ({tail})", flush=True)
            if not ok:
                print("the baseline fails: fix the suite before measuring what it catches")
                return 1
        rows, missed = [], []
        for name, (path, find, replace, sels) in faults.items():
            target = locate(root, path, find)
            original = target.read_text()
            target.write_text(original.replace(find, replace))
            try:
                for sel in sels:
                    ok, secs, tail = pytest(root, sel)
                    rows.append((name, str(target.relative_to(root)), " ".join(sel), not ok, secs, tail))
                    print(f"  {name}: {'caught' if not ok else 'MISSED'} by {' '.join(sel)} ({secs:.0f} s)", flush=True)
            finally:
                target.write_text(original)
            if not any(r[3] for r in rows if r[0] == name):
                missed.append(name)
    print("\n| fault | file | tests run | caught | time |\n|---|---|---|---|---|")
    for name, file, sel, caught, secs, tail in rows:
        print(f"| {name} | {file} | `{sel}` | {'yes' if caught else 'NO'} ({tail}) | {secs:.0f} s |")
    print(f"\n{len(faults) - len(missed)} of {len(faults)} faults caught" + (f"; MISSED: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
