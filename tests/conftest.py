import os
import sys
from pathlib import Path

import pytest

# One compiled-library cache for the test runs of this checkout (and every xdist worker of a run):
# identical generated code is built once. Its keys hash the sources, the compiler and its version
# and every flag, so a cached library is the one a fresh build would give; a fresh clone starts
# empty. JAXPR2SOFIE_CACHE chooses another folder (e.g. a new temporary one for a cold run).
os.environ.setdefault("JAXPR2SOFIE_CACHE", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "j2s-build"))
# The generated code must compile warning-free (-Wall -Wextra): every test build uses -Werror.
os.environ["JAXPR2SOFIE_STRICT"] = "1"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the slow cases (pyproject.toml's `slow` marker says which)")
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="tests/fuzz: thousands of random programs instead of the short fixed-seed run")
    parser.addoption("--fuzz-seed", type=int, default=0,
                     help="tests/fuzz: the seed every program is drawn from (default 0: the same programs each run)")


def pytest_configure(config):
    config.addinivalue_line("markers", "jaxpr_only: traces with JAX only; runs no converter and no C++ "
                                       "(counted apart in the summary)")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_FuzzFiguresFromWorkers(), "j2s-fuzz-figures")


# With pytest-xdist the fuzz tests run in worker processes: each sends its figures back when it
# finishes (workeroutput), and the controller adds them up for the summary below.
_FUZZ_TABLES = ("FAMILY_STATS", "COVERED", "SKIPS", "STATS")


def _fuzz_runner():
    return sys.modules.get("runner") if hasattr(sys.modules.get("runner"), "FAMILY_STATS") else None


class _FuzzFiguresFromWorkers:
    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        sent = getattr(node, "workeroutput", {}).get("j2s_fuzz")
        if not sent:
            return
        from collections import Counter, defaultdict
        global _RECEIVED
        if _RECEIVED is None:
            _RECEIVED = {"FAMILY_STATS": defaultdict(Counter), "COVERED": defaultdict(Counter), "SKIPS": Counter(),
                         "STATS": Counter()}
        for family, mode, counts in sent["FAMILY_STATS"]:
            _RECEIVED["FAMILY_STATS"][(family, mode)].update(counts)
        for family, counts in sent["COVERED"]:
            _RECEIVED["COVERED"][family].update(counts)
        _RECEIVED["SKIPS"].update(dict(sent["SKIPS"]))
        _RECEIVED["STATS"].update(dict(sent["STATS"]))


_RECEIVED = None


def _fuzz_figures():
    """The fuzz tables of this process, or those the xdist workers sent (a namespace like runner's)."""
    import types
    if _RECEIVED is not None:
        return types.SimpleNamespace(**_RECEIVED)
    return _fuzz_runner()


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow case: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    # "no tests collected" (e.g. a -k filter that matches nothing) is not a failure of the project
    if exitstatus == 5:
        session.exitstatus = 0
    runner = _fuzz_runner()
    workeroutput = getattr(session.config, "workeroutput", None)
    if runner is not None and workeroutput is not None:   # an xdist worker: send the fuzz figures home
        workeroutput["j2s_fuzz"] = {
            "FAMILY_STATS": [(f, m, dict(c)) for (f, m), c in runner.FAMILY_STATS.items()],
            "COVERED": [(f, dict(c)) for f, c in runner.COVERED.items()],
            "SKIPS": list(runner.SKIPS.items()), "STATS": list(runner.STATS.items())}


def pytest_terminal_summary(terminalreporter):
    from collections import Counter
    # tests that never run the converter are not conversion tests: say how many of the passes they are
    passed = terminalreporter.stats.get("passed", [])
    jaxpr_only = sum("jaxpr_only" in getattr(r, "keywords", {}) for r in passed)
    if jaxpr_only:
        terminalreporter.write_line(f"{jaxpr_only} of the {len(passed)} passed tests are jaxpr-only checks "
                                    "(marked jaxpr_only): they run no converter and no C++")
    # the differential fuzzer's figures: distinct programs per family and verdict (tests/fuzz/runner.py)
    runner = _fuzz_figures()
    stats = getattr(runner, "FAMILY_STATS", None)
    if not stats:
        return
    cols = ("compared", "xla_jit_differs", "tie", "ill_conditioned", "refused", "skipped", "mismatch")
    write = terminalreporter.write_line
    write(f"fuzz: distinct programs per family ({runner.STATS['builds']} builds)")
    write(f"  {'family':<12} {'mode':<15}" + "".join(f"{c:>16}" for c in cols))
    totals = {}   # ours, and the same programs through real SOFIE (tests/fuzz/sofie_leg.py), apart
    for (family, mode), c in sorted(stats.items()):
        write(f"  {family:<12} {mode:<15}" + "".join(f"{c[k]:>16}" for k in cols))
        total = totals.setdefault("all, SOFIE" if "SOFIE" in mode else "all", Counter())
        total.update({k: c[k] for k in cols})
    for label, total in totals.items():
        write(f"  {label:<28}" + "".join(f"{total[k]:>16}" for k in cols))
    write("  (xla_jit_differs: jax.jit and op-by-op JAX disagree, the C++ matches op by op; counted in compared too)")
    for family, prims in sorted(runner.COVERED.items()):
        write(f"fuzz primitives applied [{family}]: " + ", ".join(f"{p} {n}" for p, n in sorted(prims.items())))
    for reason, n in runner.SKIPS.most_common():
        write(f"fuzz refused x{n}: {reason}")
