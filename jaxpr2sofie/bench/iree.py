"""IREE as a peer: jax.export -> StableHLO -> iree-compile (llvm-cpu, this CPU) -> iree-benchmark-module.

The weights are closed over, so the StableHLO carries them as constants and IREE may fold and
pack them at compile time, as it would for a deployed model. `local-sync` runs the module inline
on the calling thread: IREE's single-threaded configuration. Compiled modules are cached by the
hash of the StableHLO text and the flags.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from ..cpp.build import cache_dir
from .contenders import Case, Contender, Runner
from .machine import tool

COMPILE_FLAGS = ["--iree-input-type=stablehlo", "--iree-hal-target-device=local",
                 "--iree-hal-local-target-device-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host"]
DEVICE = "--device=local-sync"
TOOLS = ("iree-compile", "iree-run-module", "iree-benchmark-module")


class IreeError(RuntimeError):
    pass


def _run(cmd, what: str) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr or res.stdout).strip().splitlines()
        raise IreeError(f"{what} failed: {last[0] if last else f'exit {res.returncode}'}")
    return res


class IreeRunner(Runner):
    def __init__(self, vmfb: Path, inputs: Path, output):
        super().__init__(output)
        self.vmfb, self.inputs = vmfb, inputs

    def time(self, iters: int, samples: int) -> list:
        out = self.inputs.parent / "iree-bench.json"
        _run([tool("iree-benchmark-module"), DEVICE, f"--module={self.vmfb}", "--function=main",
              f"--input=@{self.inputs}", f"--benchmark_min_time={int(iters)}x",
              f"--benchmark_repetitions={int(samples)}", "--benchmark_min_warmup_time=0.01",
              f"--benchmark_out={out}", "--benchmark_out_format=json"], "iree-benchmark-module")
        scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
        runs = [b for b in json.loads(out.read_text())["benchmarks"] if b.get("run_type") == "iteration"]
        if not runs:
            raise IreeError("iree-benchmark-module reported no iterations")
        return [b["real_time"] * scale[b["time_unit"]] for b in runs]


class Iree(Contender):
    key = "iree"
    label = "IREE 3.13 llvm-cpu (target-cpu=host), local-sync (1 thread), timed by iree-benchmark-module"
    threads = "1: --device=local-sync runs inline on the calling thread"

    def absent(self) -> str:
        missing = [t for t in TOOLS if not tool(t)]
        if missing:
            return (f"{', '.join(missing)} not found: pip install -e '.[bench]' "
                    "(iree-base-compiler==3.13.0, iree-base-runtime==3.13.0)")
        return ""

    def compile(self, case: Case) -> Path:
        import jax
        exported = jax.export.export(jax.jit(case.closed()))(jax.ShapeDtypeStruct(case.x.shape, case.x.dtype))
        if len(exported.out_avals) != 1:
            raise IreeError(f"the benchmark reads one output, the model has {len(exported.out_avals)}")
        text = exported.mlir_module()
        version = _run([tool("iree-compile"), "--version"], "iree-compile --version").stdout
        key = hashlib.sha256("\0".join([text, *COMPILE_FLAGS, version]).encode()).hexdigest()[:24]
        vmfb = cache_dir() / f"iree-{key}.vmfb"
        if not vmfb.exists():
            mlir = case.work / f"{case.name}.mlir"
            mlir.write_text(text)
            # written beside its final name, then renamed: a half-written module is never cached
            partial = vmfb.with_suffix(f".{os.getpid()}.partial")
            _run([tool("iree-compile"), *COMPILE_FLAGS, mlir, "-o", partial], "iree-compile")
            partial.replace(vmfb)
        return vmfb

    def prepare(self, case: Case) -> Runner:
        vmfb = self.compile(case)
        inputs, outputs = case.work / "iree-x.npy", case.work / "iree-y.npy"
        np.save(inputs, case.x)
        _run([tool("iree-run-module"), DEVICE, f"--module={vmfb}", "--function=main", f"--input=@{inputs}",
              f"--output=@{outputs}"], "iree-run-module")
        return IreeRunner(vmfb, inputs, np.load(outputs))
