"""The contenders of the peer benchmark, and how each one is prepared, checked and timed.

A contender turns a `Case` (one model at one batch) into a `Runner`: the output it computes on the
case's input, for the check against JAX, and `time(iters, samples)`, the ns per call of each of
`samples` back-to-back loops of `iters` calls. Contenders that JAX users call from Python (XLA,
ONNX Runtime) are timed from Python; their per-call Python overhead is measured on a trivial model
(`trivial()`) and subtracted by the runner. Ours, IREE and SOFIE are timed by C/C++ programs.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .models import BenchModel, Built

# An export route a JAX user would otherwise take (the pinned version is in the [bench] extra).
JAX2ONNX_HINT = "pip install -e '.[bench]' (jax2onnx==0.17.1)"

# The compiler flags the C++ contenders (ours, SOFIE) are built with (issue 24): "native" is the
# fastest build of this machine; "portable" what experiment software, CMake's RelWithDebInfo and
# ROOT's own builds use: -O2 for the documented baseline ISA (x86-64-v3: AVX2, FMA); "portable-o3"
# -O3 for that ISA, so that the optimiser's share (portable against portable-o3) shows apart from
# the ISA's (portable-o3 against native, which may use AVX-512). Column labels: FLAG_LABELS.
FLAG_SETS = {"native": ["-O3", "-march=native", "-std=c++17"],
             "portable": ["-O2", "-march=x86-64-v3", "-std=c++17"],
             "portable-o3": ["-O3", "-march=x86-64-v3", "-std=c++17"]}
FLAG_LABELS = {"portable": "O2", "portable-o3": "O3v3"}
DEFAULT_FLAG_SETS = ("native", "portable")
# the flag sets real SOFIE is built with too (portable-o3 is a question about our kernels only)
SOFIE_FLAG_SETS = ("native", "portable")


def flag_key(key: str, flag_set: str) -> str:
    """A C++ contender's key at a flag set: the native build keeps the plain key."""
    return key if flag_set == "native" else f"{key}-{flag_set}"


@dataclass
class Case:
    """One model at one batch: its function, input, JAX's answer, and artefacts the contenders share."""
    model: BenchModel
    built: Built
    batch: int
    x: np.ndarray
    reference: np.ndarray
    work: Path                                   # a scratch folder for this cell's files
    shared: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model.name}B{self.batch}"

    def closed(self) -> Callable:
        """The function with its weights closed over: exporters then embed them as constants."""
        fn, params = self.built.fn, self.built.params
        return lambda x: fn(params, x)

    def memo(self, key: str, make: Callable[[], Any]):
        """`make()` once per case, failures too: two contenders reading one export see one error."""
        if key not in self.shared:
            try:
                self.shared[key] = (True, make())
            except Exception as e:    # noqa: BLE001 - re-raised to every contender that asks
                self.shared[key] = (False, e)
        ok, value = self.shared[key]
        if not ok:
            raise value
        return value


class Runner:
    """A prepared contender for one case."""
    flops: int | None = None    # FLOPs per call, where the contender knows them (ours)

    def __init__(self, output: np.ndarray):
        self.output = np.asarray(output)

    def time(self, iters: int, samples: int) -> list:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PythonRunner(Runner):
    def __init__(self, call: Callable[[], Any], output):
        super().__init__(output)
        self.call = call

    def time(self, iters: int, samples: int) -> list:
        return time_calls(self.call, iters, samples)


class HarnessRunner(Runner):
    """Timed by a C++ program: `harness.run(iters, reps)` (see build.TimingHarness)."""

    def __init__(self, harness, output, flops=None):
        super().__init__(output)
        self.harness, self.flops = harness, flops

    def time(self, iters: int, samples: int) -> list:
        return self.harness.run(iters, samples)

    def close(self) -> None:
        self.harness.close()


def time_calls(call: Callable[[], Any], iters: int, samples: int) -> list:
    """ns per call of `samples` loops of `iters` calls; the collector stays off so that a
    collection triggered by another contender's garbage does not land in this loop."""
    call()
    was = gc.isenabled()
    gc.disable()
    try:
        out = []
        for _ in range(samples):
            t0 = time.perf_counter_ns()
            for _ in range(iters):
                call()
            out.append((time.perf_counter_ns() - t0) / iters)
        return out
    finally:
        if was:
            gc.enable()


class Contender:
    key = ""
    label = ""
    flag_set = "native"        # the compiler flags of a C++ contender (FLAG_SETS); peers are native builds
    single_thread = True       # counted among the single-threaded peers in the ratios
    threads = "1"              # how its thread count is set, for the record
    overhead_key = None        # Python-called: the trivial-model overhead subtracted from its times

    def absent(self) -> str:
        """"" when the contender can run here, else why not (a missing package or tool)."""
        return ""

    def skip(self, case: Case) -> str:
        """"" when the contender runs in this cell, else why it is left out (not a failure)."""
        return ""

    def prepare(self, case: Case) -> Runner:
        raise NotImplementedError

    def trivial(self) -> Runner:
        """x + 1 on a (1, 1) input, called the same way: its time is the Python call overhead."""
        raise NotImplementedError


# -- ours ---------------------------------------------------------------------------------------------

def sofie_model(case: Case):
    """Our conversion at the case's fixed batch: one header per model x batch."""
    from ..model import convert
    return case.memo("sofie_model", lambda: convert(case.built.fn, case.built.params, case.x, name=case.name,
                                                    progress=False))


class Ours(Contender):
    key = "ours"
    label = "jaxpr2sofie: generated C++, Session::run timed in a C++ loop, 1 thread"
    threads = "1: no threads of its own; OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1 for its sgemm calls"

    def __init__(self, flag_set: str = "native"):
        self.flag_set = flag_set
        self.key = flag_key(type(self).key, flag_set)
        self.label = f"{type(self).label}, built with {' '.join(FLAG_SETS[flag_set])}"

    def absent(self) -> str:
        from ..cpp.build import find_compiler
        from ..errors import BuildError
        try:
            find_compiler()
        except BuildError as e:
            return str(e)
        return ""

    def prepare(self, case: Case) -> Runner:
        from ..cpp.build import build_timing_harness
        m = sofie_model(case)
        out = m.compile(flags=FLAG_SETS[self.flag_set])(case.x)
        return HarnessRunner(build_timing_harness(m.graph, flags=FLAG_SETS[self.flag_set]), out, flops=int(m.flops()))


class OursThreads(Ours):
    """Ours with the batch split over every core: a dynamic-batch conversion (one per model, its
    library shared by the model's cells), `Session(file, max_batch, n_threads=cores)`. Only at
    large batches, where threads can pay off (and to keep the benchmark within its time budget)."""
    key = "ours-mt"
    single_thread = False
    MIN_BATCH = 16   # the pooled threads pay from here (issue 24)
    _models: dict = {}     # (model key, max_batch, threads) -> (SofieModel, CompiledModel)

    def __init__(self, threads: int | None = None):
        import os
        self.flag_set = "native"
        self.n_threads = threads or os.cpu_count() or 1
        self.label = (f"jaxpr2sofie with n_threads={self.n_threads}: batch rows split over std::threads "
                      f"(batch >= {self.MIN_BATCH}), Session::run timed in a C++ loop")
        self.threads = (f"{self.n_threads} (the cores): Session(..., n_threads); "
                        "OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1 for its sgemm calls")

    def skip(self, case: Case) -> str:
        return f"batch below {self.MIN_BATCH}" if case.batch < self.MIN_BATCH else ""

    def _dynamic(self, case: Case):
        from ..model import convert
        top = max(case.batch, *case.model.batches)
        key = (case.model.key, top, self.n_threads)
        if key not in self._models:
            m = convert(case.built.fn, case.built.params, case.x, name=f"{case.model.name}Dyn", batch="dynamic",
                        max_batch=top, progress=False)
            self._models[key] = (m, m.compile(n_threads=self.n_threads))
        return self._models[key]

    def prepare(self, case: Case) -> Runner:
        from ..cpp.build import build_timing_harness
        from ..ir import dims
        m, compiled = self._dynamic(case)
        out = compiled(case.x)
        harness = build_timing_harness(m.graph, batch=case.batch, n_threads=self.n_threads)
        return HarnessRunner(harness, out, flops=dims.evaluate(m.flops(), case.batch))


# -- XLA ---------------------------------------------------------------------------------------------

class Xla(Contender):
    key = "xla"
    label = "XLA CPU: jax.jit from Python, inputs on the device, block_until_ready (XLA's threads)"
    single_thread = False
    overhead_key = "xla"
    threads = "XLA's default (its Eigen thread pool over all cores)"

    def prepare(self, case: Case) -> Runner:
        import jax
        f = jax.jit(case.built.fn)
        args = jax.device_put((case.built.params, case.x))
        return PythonRunner(lambda: f(*args).block_until_ready(), np.asarray(f(*args)))

    def trivial(self) -> Runner:
        import jax
        f = jax.jit(lambda x: x + 1)
        x = jax.device_put(np.zeros((1, 1), np.float32))
        return PythonRunner(lambda: f(x).block_until_ready(), np.asarray(f(x)))


# -- ONNX Runtime ----------------------------------------------------------------------------------------

def jax2onnx_export(case: Case) -> bytes:
    def make():
        import jax
        from jax2onnx import to_onnx
        proto = to_onnx(case.closed(), inputs=[jax.ShapeDtypeStruct(case.x.shape, case.x.dtype)],
                        model_name=case.name)
        return proto.SerializeToString()
    return case.memo("jax2onnx", make)


def ours_export(case: Case) -> bytes:
    return case.memo("ours_onnx", lambda: sofie_model(case).to_onnx().SerializeToString())


class Ort(Contender):
    """ONNX Runtime's CPU provider on one export, with one thread or its default thread pools."""
    EXPORTS = {"jax2onnx": (jax2onnx_export, "the jax2onnx export"), "ours": (ours_export, "our to_onnx export")}

    def __init__(self, export: str, threads: int | None):
        self.export, self.n_threads = export, threads
        self.single_thread = threads == 1
        self.key = f"ort{'1' if threads == 1 else ''}-{export}"
        self.overhead_key = "ort1" if threads == 1 else "ort"
        self.threads = ("1: intra_op_num_threads = inter_op_num_threads = 1" if threads == 1
                        else "ONNX Runtime's default (intra-op pool of one thread per physical core)")
        self.label = (f"ONNX Runtime {'1 thread' if threads == 1 else 'default threads'} on "
                      f"{self.EXPORTS[export][1]}, session.run from Python")

    def absent(self) -> str:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime not installed (pip install onnxruntime)"
        if self.export == "jax2onnx":
            try:
                import jax2onnx  # noqa: F401
            except ImportError:
                return f"jax2onnx not installed: {JAX2ONNX_HINT}"
        try:
            import onnx  # noqa: F401
        except ImportError:
            return "onnx not installed (pip install onnx)"
        return ""

    def session(self, data: bytes):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.log_severity_level = 3        # ORT's warnings about unused initializers are not results
        if self.n_threads == 1:
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
        return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])

    def _runner(self, data: bytes, x: np.ndarray) -> Runner:
        sess = self.session(data)
        feed = {sess.get_inputs()[0].name: x}
        return PythonRunner(lambda: sess.run(None, feed), sess.run(None, feed)[0])

    def prepare(self, case: Case) -> Runner:
        return self._runner(self.EXPORTS[self.export][0](case), case.x)

    def trivial(self) -> Runner:
        from onnx import TensorProto, helper
        graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "trivial",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
                                  [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        return self._runner(model.SerializeToString(), np.zeros((1, 1), np.float32))


def all_contenders() -> dict:
    from .iree import Iree
    from .sofie_peer import Sofie
    found = [Ours(), Xla(), OursThreads(), Ort("jax2onnx", 1), Ort("jax2onnx", None), Ort("ours", 1), Ort("ours", None), Iree(),
             Sofie("onnx"), Sofie("operators")]
    return {c.key: c for c in found}


def flag_set_contenders(flag_sets) -> dict:
    """Ours and SOFIE built with each flag set but the native one (keys `ours-portable`, ...);
    SOFIE only at SOFIE_FLAG_SETS."""
    from .sofie_peer import Sofie
    found = [c for f in flag_sets if f != "native"
             for c in (Ours(f), *([Sofie("onnx", f)] if f in SOFIE_FLAG_SETS else []))]
    return {c.key: c for c in found}
