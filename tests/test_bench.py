"""The peer benchmark, on its smallest model: every installed contender checked against JAX and
timed, every missing one an "absent" cell with its reason, a failing one an error cell; the JSON,
the table and the CLI wiring. Timings are never asserted."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np
import pytest

from jaxpr2sofie import bench
from jaxpr2sofie.bench import contenders as C
from jaxpr2sofie.bench import runner
from jaxpr2sofie.cli import main as cli_main


class Broken(C.Contender):
    """A peer whose conversion fails: the run goes on, its cell says why."""
    key, label = "broken", "a peer that cannot convert"

    def prepare(self, case):
        raise RuntimeError("no rule for dot_general\nsecond line not shown")


class Wrong(C.Contender):
    """A peer that computes the wrong answer: refused by the check, never timed."""
    key, label = "wrong", "a peer off by one"

    def prepare(self, case):
        return C.PythonRunner(lambda: None, case.reference + 1.0)


RDF_EVENTS = 3000    # the RDataFrame row's events in the test: the file is written once per cache

# The whole run below (every contender, three flag sets, the RDataFrame row: about a minute) is in
# the slow set, which .ci/run runs after the main command; test_a_small_run_checks_times_and_reports
# keeps a one-flag-set run of ours and the failing peers in the main command.
slow = pytest.mark.slow


def test_a_small_run_checks_times_and_reports(tmp_path, monkeypatch, capsys):
    """One model, one batch, one flag set: ours checked against JAX and timed, a peer that cannot
    convert and one that is wrong reported as errors, the JSON and table written."""
    real = runner.all_contenders
    monkeypatch.setattr(runner, "all_contenders", lambda: {**real(), "broken": Broken(), "wrong": Wrong()})
    assert bench.main(["--quick", "--models", "A", "--batches", "3", "--repeats", "1", "--out", str(tmp_path),
                       "--flag-sets", "native", "--rdf-events", "0", "--contenders", "ours,broken,wrong"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    cells = {c["contender"]: c for c in data["cells"]}
    assert set(cells) == {"ours", "broken", "wrong"} and all(c["batch"] == 3 for c in cells.values())
    assert cells["ours"]["status"] == "ok" and cells["ours"]["rel_err"] <= runner.TOLERANCE
    assert cells["ours"]["raw_us"] > 0 and cells["ours"]["gflops"] > 0
    assert cells["broken"]["reason"] == "conversion failed: RuntimeError: no rule for dot_general"
    assert cells["wrong"]["status"] == "error" and cells["wrong"]["reason"].startswith("check failed: max error")
    assert "jaxpr2sofie peer benchmark" in printed and "wrote " in printed
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("A ")] == ["3"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    real = runner.all_contenders
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(runner, "all_contenders", lambda: {**real(), "broken": Broken(), "wrong": Wrong()})
        assert bench.main(["--quick", "--models", "A", "--batches", "1,2", "--repeats", "1", "--out", str(out),
                           "--flag-sets", "native,portable,portable-O3", "--rdf-events", str(RDF_EVENTS)]) == 0
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text()), printed.getvalue(), out


@slow
def test_json_structure(results):
    data, _, out = results
    for key in ("date", "machine", "versions", "threads", "peak", "overhead_us", "contenders", "models", "cells",
                "rows", "table", "settings", "wall_s"):
        assert key in data, key
    assert data["machine"]["cores"] >= 1 and isinstance(data["machine"]["flags"], list)
    assert data["versions"]["jax"] and data["versions"]["numpy"]
    assert data["peak"]["gflops_1core"] > 0 and data["peak"]["gflops_all_cores"] > 0
    assert data["models"] == {"A": {"title": "MLP 16-64-64-32-1", "batches": [1, 2]}}
    keys = list(data["contenders"])
    assert all(v["threads"] and v["label"] for v in data["contenders"].values())
    assert data["contenders"]["ort1-ours"]["threads"].startswith("1:")
    assert keys[:2] == ["ours", "xla"] and {"ort1-jax2onnx", "ort-ours", "iree", "sofie"} <= set(keys)
    assert {(c["batch"], c["contender"]) for c in data["cells"]} == {(b, k) for b in (1, 2) for k in keys}
    # every Python-called runtime's overhead was measured in each cell, subtracted, and reported
    for c in data["cells"]:
        over = data["contenders"][c["contender"]]["overhead"]
        if c["status"] == "ok" and over:
            assert c["overhead_us"] > 0 and over in data["overhead_us"]
            assert c["us"] == pytest.approx(max(c["raw_us"] - c["overhead_us"], 0.0))
        elif c["status"] == "ok":
            assert c["overhead_us"] == 0.0 and c["us"] == c["raw_us"]
    assert "xla" in data["overhead_us"] and set(data["overhead_us"]) <= {"xla", "ort1", "ort"}
    assert [(r["model"], r["batch"]) for r in data["rows"]] == [("A", 1), ("A", 2)]
    assert sorted(p.suffix for p in out.iterdir()) in ([".json", ".png"], [".json"])
    assert data["settings"]["rdf_events"] == RDF_EVENTS and list(data["settings"]["flag_sets"]) == [
        "native", "portable", "portable-o3"]


@slow
def test_flag_sets_each_a_column_and_their_ratios(results):
    """native, portable (ours and SOFIE) and portable-O3 (ours only): a column each, checked and
    timed, and the ratios that split O2/O3 into the ISA's and the optimiser's shares."""
    data, printed, _ = results
    info = data["contenders"]
    assert {"ours-portable", "sofie-portable", "ours-portable-o3"} <= set(info) and "sofie-portable-o3" not in info
    assert info["ours-portable-o3"]["flag_set"] == "portable-o3" and "-O3 -march=x86-64-v3" in info[
        "ours-portable-o3"]["label"]
    ok = {(c["batch"], c["contender"]): c for c in data["cells"] if c["status"] == "ok"}
    for b in (1, 2):
        for k in ("ours-portable", "ours-portable-o3") + (("sofie-portable",) if not info["sofie"]["absent"] else ()):
            assert ok[b, k]["us"] > 0 and ok[b, k]["rel_err"] <= runner.TOLERANCE
    for r in data["rows"]:
        assert r["isa_ratio"] == pytest.approx(ok[r["batch"], "ours-portable-o3"]["us"] / ok[r["batch"], "ours"]["us"])
        assert r["opt_ratio"] == pytest.approx(ok[r["batch"], "ours-portable"]["us"]
                                               / ok[r["batch"], "ours-portable-o3"]["us"])
    header = next(line for line in printed.splitlines() if line.startswith("model")).split()
    assert {"ours:O2", "sofie:O2", "ours:O3v3", "O2/O3", "O2:sofie", "O3v3/O3", "O2/O3v3"} <= set(header)


@slow
def test_rdataframe_row(results):
    """The RDataFrame row: reading the columns alone, ours (and SOFIE's header) through
    root.define, on one thread and on every core, each figure positive, the budget worked out
    from the run's own compiled latency, and the events shared out over the slots."""
    data, printed, _ = results
    r = data["rdf"]
    assert "absent" not in r and "error" not in r, r     # PyROOT is in the [test] extra
    assert r["events"] == RDF_EVENTS and r["columns"] == 28 and r["file"]["entries"] == RDF_EVENTS
    assert r["file"]["clusters"] >= 1 and r["compiled_us"] > 0
    threads = sorted({"1", str(os.cpu_count())}, key=int)     # the sequential loop and every core
    assert list(r["threads"]) == threads
    keys = ["read", "ours"] + ([] if r["sofie_absent"] else ["sofie"])
    for t in threads:
        assert list(r["threads"][t]) == keys
        for k in keys:
            c = r["threads"][t][k]
            assert c["wall_us"] > 0 and c["cpu_us"] >= 0 and c["events_per_s"] > 0 and len(c["rounds_wall_us"]) == 1
        assert sum(r["slots"][t]) == RDF_EVENTS and len(r["slots"][t]) == int(t) and r["load"][t] >= 0
    b, one = r["budget"], r["threads"]["1"]
    assert b["budget_us"] == pytest.approx(r["compiled_us"] + one["read"]["wall_us"] + 0.3)
    assert b["met"] == (one["ours"]["wall_us"] <= b["budget_us"])
    if len(threads) > 1:
        top = r["threads"][threads[-1]]
        assert r["speedup"]["ours"] == pytest.approx(one["ours"]["wall_us"] / top["ours"]["wall_us"])
    assert f"RDataFrame (ROOT {r['root']}): {RDF_EVENTS} events of 28 float columns" in printed
    assert "budget (issue 24, 1 thread)" in printed


@slow
def test_readme_report_of_this_run(results):
    """benchmarks/report_readme.py on the run: the command that reproduces it, the table with
    every flag set and the RDataFrame row, the bullets, and the plot drawn when it is missing."""
    import importlib.util
    from pathlib import Path
    data, _, out = results
    spec = importlib.util.spec_from_file_location("report_readme", Path(__file__).parents[1] / "benchmarks" /
                                                  "report_readme.py")
    rr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rr)
    (result,) = out.glob("*.json")
    section = rr.readme_section(data, result.stem)
    assert (f"`python benchmarks/run.py --models A --batches 1,2 --flag-sets native,portable,portable-o3 "
            f"--rdf-events {RDF_EVENTS} --quick`") in section
    assert data["table"].rstrip("\n") in section
    threads_run = "" if os.cpu_count() == 1 else f"{os.cpu_count()} threads run it"
    for needed in ("(O2/O3, issue 24's target", "(O2:sofie)" if not data["contenders"]["sofie"]["absent"] else "",
                   "(O3v3/O3)", "(O2/O3v3)", "- Inside RDataFrame (3000 events", threads_run):
        assert needed in section, needed
    readme = rr.rendered(result)["README.md"]
    assert section in readme and readme.count("<!-- bench-report:start -->") == 1
    pytest.importorskip("matplotlib")
    result.with_suffix(".png").unlink(missing_ok=True)
    rr.ensure_plot(result, data)
    assert result.with_suffix(".png").stat().st_size > 0


@slow
def test_present_contenders_agree_with_jax_absent_ones_say_why(results):
    data, _, _ = results
    for c in data["cells"]:
        info = data["contenders"][c["contender"]]
        if c["contender"] in ("broken", "wrong"):
            continue
        if info["absent"]:
            assert c["status"] == "absent" and c["reason"] == info["absent"]
        elif c["contender"] == "ours-mt":   # threads only at large batches
            assert c["status"] == "skipped" and c["reason"].startswith("batch below"), c
        else:
            assert c["status"] == "ok", c
            assert c["rel_err"] <= runner.TOLERANCE
            assert c["us"] >= 0 and c["raw_us"] > 0 and len(c["rounds_us"]) == 1
    ours = [c for c in data["cells"] if c["contender"] == "ours"]
    assert all(c["status"] == "ok" and c["flops"] > 0 and c["gflops"] > 0 for c in ours)
    # the CI installs no jax2onnx and no IREE: their cells must then be absent, naming the fix
    if data["contenders"]["iree"]["absent"]:
        assert "[bench]" in data["contenders"]["iree"]["absent"]
    assert data["contenders"]["sofie"]["absent"] or data["contenders"]["sofie"]["absent"] is None


@slow
def test_failing_contenders_get_a_reason_not_a_crash(results):
    data, _, _ = results
    cells = {(c["batch"], c["contender"]): c for c in data["cells"]}
    for b in (1, 2):
        assert cells[b, "broken"]["status"] == "error"
        assert cells[b, "broken"]["reason"] == "conversion failed: RuntimeError: no rule for dot_general"
        assert cells[b, "wrong"]["status"] == "error" and cells[b, "wrong"]["rel_err"] > 1e-4
        assert cells[b, "wrong"]["reason"].startswith("check failed: max error")


@slow
def test_table_prints(results):
    _, printed, _ = results
    assert "jaxpr2sofie peer benchmark" in printed and "sgemm peak" in printed
    header = next(line for line in printed.splitlines() if line.startswith("model"))
    assert header.split()[:4] == ["model", "batch", "ours", "xla"] and header.split()[-1] == "%peak"
    rows = [line.split() for line in printed.splitlines() if line.startswith("A ")]
    assert [r[1] for r in rows] == ["1", "2"]
    assert "conversion failed: RuntimeError: no rule for dot_general" in printed
    assert "wrote " in printed


def test_rel_error_is_relative_to_the_output_scale():
    want = np.array([[100.0, -50.0]], np.float32)
    assert runner.rel_error(want + 0.01, want) == pytest.approx(1e-4, rel=1e-3)
    with pytest.raises(ValueError, match="shape"):
        runner.rel_error(want.T, want)
    assert runner.rel_error(np.full_like(want, np.nan), want) == float("inf")


@pytest.mark.parametrize("argv, message", [
    (["bench"], "needs a MODEL file"),
    (["bench", "model.py", "--quick"], "--quick is an option of the peer benchmark"),
    (["bench", "model.py", "--peers"], "drop MODEL"),
    (["bench", "--peers", "--models", "A,Z"], "unknown model(s) Z"),
    (["bench", "--peers", "--contenders", "ours,tvm"], "unknown contender(s) tvm"),
    (["bench", "--peers", "--rdf-events", "-1"], "--rdf-events must be 0"),
    (["bench", "--peers", "--flag-sets", "portable-o3"], "--flag-sets takes native (always)"),
])
def test_cli_bench_peers_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert message in str(e.value)


def test_missing_peers_are_absent_with_the_install_hint(monkeypatch):
    """What the CI (the [test] extra: no jax2onnx, no IREE) sees."""
    from jaxpr2sofie.bench import iree
    monkeypatch.setitem(sys.modules, "jax2onnx", None)       # import jax2onnx now raises ImportError
    monkeypatch.setattr(iree, "tool", lambda name: None)
    assert "jax2onnx not installed" in C.Ort("jax2onnx", 1).absent()
    assert C.Ort("ours", 1).absent() == ""
    assert "iree-compile, iree-run-module, iree-benchmark-module not found" in iree.Iree().absent()
    from jaxpr2sofie.bench.sofie_peer import Sofie
    assert Sofie().absent() == ""   # real SOFIE is in the [test] extra


def test_real_sofie_peer_is_checked_and_timed(tmp_path):
    """The sofie column: SOFIE's own header for the case (its ONNX parser on our export), checked
    against JAX and timed by its C++ harness."""
    from jaxpr2sofie.bench.models import MODELS
    from jaxpr2sofie.bench.sofie_peer import Sofie
    model = MODELS["A"]
    built = model.build()
    case = C.Case(model, built, 2, *runner.reference(model, built, 2), tmp_path)
    r = Sofie().prepare(case)
    assert runner.rel_error(r.output, case.reference) <= runner.TOLERANCE
    assert min(r.time(5, 1)) > 0


def test_ours_on_every_core_runs_large_batches_and_is_checked(tmp_path):
    """The ours-mt contender: skipped below its batch floor, else a dynamic-batch Session with
    n_threads = cores, checked against JAX and timed by the C++ harness."""
    from jaxpr2sofie.bench.models import MODELS
    model = MODELS["A"]
    built = model.build()
    small = C.Case(model, built, 2, *runner.reference(model, built, 2), tmp_path)
    mt = C.OursThreads(threads=2)
    assert mt.skip(small).startswith("batch below") and not mt.single_thread
    big = C.Case(model, built, mt.MIN_BATCH, *runner.reference(model, built, mt.MIN_BATCH), tmp_path)
    assert mt.skip(big) == ""
    r = mt.prepare(big)
    try:
        assert runner.rel_error(r.output, big.reference) <= runner.TOLERANCE
        assert r.flops > 0 and min(r.time(5, 1)) > 0
    finally:
        r.close()


def test_ratio_of_ours_on_every_core():
    from jaxpr2sofie.bench.report import ratio_rows
    cells = [{"model": "B", "batch": 256, "contender": k, "status": "ok", "us": us}
             for k, us in (("ours", 100.0), ("ours-mt", 60.0), ("xla", 80.0), ("ort1-ours", 90.0))]
    contenders = {"ours": {"single_thread": True}, "ours-mt": {"single_thread": False},
                  "xla": {"single_thread": False}, "ort1-ours": {"single_thread": True}}
    (row,) = ratio_rows({"cells": cells, "peak": {}, "contenders": contenders})
    assert row["best_all"] == "xla" and row["ours_mt_over_best_all"] == pytest.approx(0.75)
    assert row["ours_over_best_1t"] == pytest.approx(100 / 90)


def test_rdataframe_budget_and_table_from_figures():
    """The RDataFrame row's arithmetic on given figures: the budget (compiled + reading + 0.3 µs),
    met or missed, define's own cost, the speed-up of every core; and its lines in the table."""
    from jaxpr2sofie.bench import rdf
    from jaxpr2sofie.bench.report import rdf_table

    def cell(us):
        return {"wall_us": us, "cpu_us": us, "events_per_s": 1e6 / us}
    runs = {"1": {"contenders": {"read": cell(1.5), "ours": cell(1.9)}, "slots": [1000], "root": "6.40.00",
                  "file": {"clusters": 100, "compression": 101, "zip_mb": 1.0, "entries": 1000}},
            "2": {"contenders": {"read": cell(0.75), "ours": cell(1.0)}, "slots": [480, 520], "root": "6.40.00",
                  "file": {"clusters": 100, "compression": 101, "zip_mb": 1.0, "entries": 1000}}}
    prep = {"compiled_us": 0.2, "compiled_rounds_us": [0.2], "spec": {"repeats": 3}}
    r = rdf.summarise(1000, prep, runs, "", 1.0)
    assert r["budget"]["budget_us"] == pytest.approx(2.0) and r["budget"]["met"]
    assert r["budget"]["over_us"] == pytest.approx(-0.1) and r["budget"]["overhead_us"] == pytest.approx(0.2)
    assert r["speedup"] == pytest.approx({"read": 2.0, "ours": 1.9}) and r["speedup_threads"] == 2
    text = "\n".join(rdf_table(r))
    assert "ours 1.900: met by 0.100 µs" in text and "ours 1.90x" in text and "events per slot: 480, 520" in text
    runs["1"]["contenders"]["ours"] = cell(2.4)
    assert rdf.summarise(1000, prep, runs, "", 1.0)["budget"]["over_us"] == pytest.approx(0.4)
    assert rdf_table({"absent": "PyROOT not usable"}) == ["RDataFrame row: absent: PyROOT not usable"]
