import os
import tempfile

import pytest

# One compiled-library cache per test run: identical generated code is built once.
os.environ.setdefault("JAXPR2SOFIE_CACHE", tempfile.mkdtemp(prefix="j2s-test-cache-"))
# The generated code must compile warning-free (-Wall -Wextra): every test build uses -Werror.
os.environ["JAXPR2SOFIE_STRICT"] = "1"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run model-zoo sized cases")
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="tests/fuzz: thousands of random programs instead of the short fixed-seed run")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow model-zoo case: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    # "no tests collected" (e.g. a -k filter that matches nothing) is not a failure of the project
    if exitstatus == 5:
        session.exitstatus = 0


def pytest_terminal_summary(terminalreporter):
    # the differential fuzzer's figures (programs run, builds, mismatches, documented skips)
    runner = __import__("sys").modules.get("runner")
    stats = getattr(runner, "STATS", None)
    if stats:
        terminalreporter.write_line("fuzz: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
        for reason, n in runner.SKIPS.most_common():
            terminalreporter.write_line(f"fuzz skip x{n}: {reason}")
