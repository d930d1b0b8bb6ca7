import os
import tempfile

import pytest

# One compiled-library cache per test run: identical generated code is built once.
os.environ.setdefault("JAXPR2SOFIE_CACHE", tempfile.mkdtemp(prefix="j2s-test-cache-"))
# The generated code must compile warning-free (-Wall -Wextra): every test build uses -Werror.
os.environ["JAXPR2SOFIE_STRICT"] = "1"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run model-zoo sized cases")


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
