"""Write the benchmark figures of README.md and benchmarks/README.md from a results JSON.

    python benchmarks/report_readme.py                  # the newest benchmarks/results/*.json
    python benchmarks/report_readme.py results.json     # a given run
    python benchmarks/report_readme.py --check          # exit 1 if the READMEs differ from what it writes

Every figure of the "Performance" section (the table, the ranges in the prose, the wall time, the
machine, the versions, the command) is computed here from one JSON written by `benchmarks/run.py`,
between `<!-- bench-report:start -->` and `<!-- bench-report:end -->` (and `<!-- bench-wall:... -->`
in benchmarks/README.md): prose and table come from the same numbers, so they cannot disagree.
tests/test_readme.py checks that the READMEs hold exactly what this script writes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MARKERS = {"README.md": "bench-report", "benchmarks/README.md": "bench-wall"}
MLPS = ("A", "B", "D", "E")             # the dense models of the benchmark (bench/models.py)
ALL_MODELS = tuple("ABCDEFGH")          # its eight models: what run.py runs without --models
# the defaults of benchmarks/run.py, so the command shown is the one that reproduces the run
DEFAULTS = {"batches": None, "repeats": 5, "quick": False, "flag_sets": ["native", "portable"],
            "rdf_events": 1_000_000}


def newest_result() -> Path:
    return max(RESULTS.glob("*.json"), key=lambda p: p.name)


def _span(values, fmt="{:.2f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def command(d: dict) -> str:
    s, args = d["settings"], []
    models = s.get("models") or ALL_MODELS
    if tuple(sorted(models)) != ALL_MODELS:
        args.append("--models " + ",".join(models))
    if s.get("batches") != DEFAULTS["batches"]:
        args.append("--batches " + ",".join(map(str, s["batches"])))
    # runs from before these options ran the flag sets they record and no RDataFrame row
    flag_sets = list(s.get("flag_sets") or DEFAULTS["flag_sets"])
    if flag_sets != DEFAULTS["flag_sets"]:
        args.append("--flag-sets " + ",".join(flag_sets))
    if s.get("rdf_events", 0) != DEFAULTS["rdf_events"]:
        args.append(f"--rdf-events {s.get('rdf_events', 0)}")
    if s.get("quick"):
        args.append("--quick")
    elif s.get("repeats") != DEFAULTS["repeats"]:
        args.append(f"--repeats {s['repeats']}")
    return " ".join(["python benchmarks/run.py", *args])


def _cell(d: dict, model: str, batch: int, contender: str):
    for c in d["cells"]:
        if c["model"] == model and c["batch"] == batch and c["contender"] == contender and c["status"] == "ok":
            return c["us"]
    return None


def provenance(d: dict, stem: str) -> str:
    m, v = d["machine"], d["versions"]
    versions = ", ".join(f"{k} {v[k]}" for k in ("jaxpr2sofie", "jax", "jaxlib", "numpy", "onnxruntime", "jax2onnx",
                                                  "iree-base-runtime", "scipy-openblas32", "flax", "keras") if v.get(k))
    return (f"`{command(d)}` on {d['date']}, {m['model']} ({' '.join(m['flags'])}), {m['cores']} cores, "
            f"Python {m['python']}, {versions}, {v.get('c++', 'C++ compiler unknown')}; the run took "
            f"{d['wall_s']:.0f} s. Its JSON and plot are `benchmarks/results/{stem}.json` and `.png`")


def readme_section(d: dict, stem: str) -> str:
    rows = d["rows"]
    lines = [
        f"The run below: {provenance(d, stem)} (`python benchmarks/report_readme.py` writes this part of the README "
        "from the JSON).",
        "",
        f"![latency against batch per model](benchmarks/results/{stem}.png)",
        "",
        "```text",
        d["table"].rstrip("\n"),
        "```",
        "",
        "What it shows (ours over the fastest peer; below 1, ours is faster):",
        "",
    ]
    # a bullet per figure the run has: a small run (tests/test_bench.py) lacks some
    batch1 = [r for r in rows if r["batch"] == 1 and r["ours_over_best_1t"] is not None]
    if batch1:
        fastest = [r["model"] for r in batch1 if r["ours_over_best_1t"] < 1]
        worst1 = max(batch1, key=lambda r: r["ours_over_best_1t"])
        lines.append(f"- Batch 1, one thread: ours is the fastest single-threaded contender on {len(fastest)} of "
                     f"{len(batch1)} models (ours/1t {_span([r['ours_over_best_1t'] for r in batch1])}; the highest, "
                     f"{worst1['model']} {worst1['ours_over_best_1t']:.2f} against {worst1['best_1t']}).")
    per_model = []
    for model in d["models"]:
        r = [x for x in rows if x["model"] == model and x["batch"] >= 16 and x["ours_over_best_1t"] is not None]
        if r:
            per_model.append(f"{model} {_span([x['ours_over_best_1t'] for x in r])}")
    if per_model:
        lines.append("- Batch 16 and above, one thread, ours/1t per model: " + "; ".join(per_model) + ".")
    speedups, mt_all, one_thread = [], [], []
    for model in d["models"]:
        s = [(_cell(d, model, b, "ours"), _cell(d, model, b, "ours-mt")) for b in d["models"][model]["batches"]]
        s = [one / mt for one, mt in s if one and mt]
        if s:
            speedups.append(f"{model} {_span(s)}x")
            if max(s) < 1.2:
                one_thread.append(model)
        m = [x["ours_mt_over_best_all"] for x in rows if x["model"] == model and x["ours_mt_over_best_all"] is not None]
        if m:
            mt_all.append(f"{model} {_span(m)}")
    mt_batches = [b for model in d["models"] for b in d["models"][model]["batches"] if _cell(d, model, b, "ours-mt")]
    if speedups:
        lines.append(f"- Batch split over every core (`ours:mt`, batches {min(mt_batches)} and above): ours "
                     "over ours:mt (above 1 the threads pay) " + "; ".join(speedups)
                     + (f" ({', '.join(one_thread)} about 1x: the model runs on one thread, see \"Threads over the "
                        "batch\")" if one_thread else "") + "; mt/all per model: " + "; ".join(mt_all) + ".")
    peak = [x["ours_peak_fraction"] * 100 for x in rows if x["model"] in MLPS and x["batch"] >= 16
            and x["ours_peak_fraction"] is not None]
    if peak:
        lines.append(f"- The dense models ({', '.join(MLPS)}) at batch 16 and above run at {_span(peak, '{:.0f}')} % "
                     f"of the one-core sgemm peak ({d['peak']['gflops_1core']:.1f} GFLOP/s).")
    lines += flag_set_lines(rows) + rdf_lines(d.get("rdf"))
    return "\n".join(lines)


def flag_set_lines(rows) -> list:
    """The portable builds against the native ones, where the run has them."""
    out = []
    for key, what in (("portable_over_native", "Built portable (`-O2 -march=x86-64-v3`) against native "
                                               "(`-O3 -march=native`), ours (O2/O3, issue 24's target at most 1.15)"),
                      ("portable_over_sofie", "Both built portable, ours over real SOFIE (O2:sofie)"),
                      ("isa_ratio", "The ISA's share: ours at `-O3 -march=x86-64-v3` over native (O3v3/O3)"),
                      ("opt_ratio", "The optimiser's share: ours at `-O2` over `-O3`, both `-march=x86-64-v3` "
                                    "(O2/O3v3)")):
        vals = [r for r in rows if r.get(key) is not None]
        if vals:
            worst = max(vals, key=lambda r: r[key])
            out.append(f"- {what}: {_span([r[key] for r in vals])} over {len(vals)} cells (the highest, "
                       f"{worst['model']} batch {worst['batch']}).")
    return out


def rdf_lines(r) -> list:
    """The RDataFrame row (issue 24): the budget and the threads' speed-up."""
    if not r:
        return []
    if "threads" not in r:
        return [f"- RDataFrame row: not measured ({r.get('absent') or r.get('error')})."]
    b, one = r["budget"], r["threads"]["1"]
    line = (f"- Inside RDataFrame ({r['events']} events, {r['model']} on {r['columns']} float columns, through "
            f"`jaxpr2sofie.root.define`): {one['ours']['wall_us']:.2f} µs per event on one thread "
            f"({one['ours']['events_per_s'] / 1e6:.2f} M events/s), against a budget of {b['budget_us']:.2f} "
            f"(compiled {r['compiled_us']:.2f} + RDataFrame reading the columns {one['read']['wall_us']:.2f} + "
            f"{b['margin_us']}): {'met' if b['met'] else 'missed'} by {abs(b['over_us']):.2f} µs")
    if r.get("speedup"):
        sp = r["speedup"]
        load = r.get("load", {}).get(str(r["speedup_threads"]))
        line += (f"; {r['speedup_threads']} threads run it {sp['ours']:.2f}x as fast (reading alone "
                 f"{sp['read']:.2f}x" + (f"; load average {load:.1f} on {r['cores']} cores as they ended"
                                         if load is not None else "") + ")")
    if "sofie" in one:
        line += f"; SOFIE's own header through `define`: {one['sofie']['wall_us']:.2f} µs per event"
    return [line + "."]


def bench_readme_section(d: dict, stem: str) -> str:
    return (f"The run kept in `benchmarks/results/` ({stem}.json and .png; its table is in the top-level README's "
            f"\"Performance\" section): {provenance(d, stem)}.")


def _replace(text: str, marker: str, body: str, path: str) -> str:
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path}: markers {start} ... {end} not found")
    head, rest = text.split(start, 1)
    return head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]


def ensure_plot(result: Path, d: dict) -> None:
    """The plot beside the JSON, drawn from it when the run had no matplotlib (the README shows it)."""
    png = result.with_suffix(".png")
    if not png.exists():
        from jaxpr2sofie.bench.report import plot
        plot(d, png)


def rendered(result: Path) -> dict:
    """{README path relative to the repository: its text with the benchmark sections written}."""
    d = json.loads(result.read_text())
    stem = result.stem
    bodies = {"README.md": readme_section(d, stem), "benchmarks/README.md": bench_readme_section(d, stem)}
    return {rel: _replace((REPO / rel).read_text(), MARKERS[rel], bodies[rel], rel) for rel in MARKERS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", nargs="?", type=Path, help="a results JSON (default: the newest in benchmarks/results)")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a README differs")
    args = ap.parse_args(argv)
    stale, result = [], args.result or newest_result()
    if not args.check:
        ensure_plot(result, json.loads(result.read_text()))
    for rel, text in rendered(result).items():
        if (REPO / rel).read_text() != text:
            stale.append(rel)
            if not args.check:
                (REPO / rel).write_text(text)
    if args.check and stale:
        print(f"stale benchmark figures in {', '.join(stale)}: run python benchmarks/report_readme.py", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale else "the READMEs hold the JSON's figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
