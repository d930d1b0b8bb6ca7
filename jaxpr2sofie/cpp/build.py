"""Compile generated code (g++/clang++ against a real BLAS), cache it by content hash, run it via ctypes."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BuildError, InputError, WeightFileError
from ..ir import dims
from .abi import SessionABI
from .emit import INCLUDES, THREAD_INCLUDES, c_api_source, render
from .kernels import BLAS_HELPERS
from .weights import write_weights
from .threads import splittable

WARNINGS = ["-Wall", "-Wextra"]
DEFAULT_FLAGS = ["-O3", "-march=native", "-std=c++17"]


def cache_dir() -> Path:
    d = Path(os.environ.get("JAXPR2SOFIE_CACHE", Path.home() / ".cache" / "jaxpr2sofie"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def find_compiler(cxx: str | None = None) -> str:
    """`cxx`, else $CXX, else the first of g++, clang++, c++ on the PATH. A compiler asked for by
    name (argument or $CXX) that does not exist is an error, never a silent fallback."""
    asked = cxx or os.environ.get("CXX")
    if asked:
        found = shutil.which(asked)
        if not found:
            source = "cxx=" if cxx else "the CXX environment variable"
            raise BuildError(f"the C++ compiler {asked!r} given by {source} was not found: install it, fix the "
                             "path, or unset CXX to use g++/clang++ from the PATH")
        return found
    for cand in ("g++", "clang++", "c++"):
        if shutil.which(cand):
            return shutil.which(cand)
    raise BuildError("no C++ compiler found: install one (Debian/Ubuntu: apt-get install g++) "
                     "or set CXX to its path")


@dataclass(frozen=True)
class Blas:
    """How to link BLAS: link flags and the name of the Fortran sgemm symbol."""
    name: str
    link: tuple
    sgemm: str


def find_blas(which: str | None = None) -> Blas:
    """`which`: None (scipy-openblas32 if installed, else the system BLAS), 'scipy-openblas32' or 'system'."""
    which = which or os.environ.get("JAXPR2SOFIE_BLAS") or "auto"
    if which in ("auto", "scipy-openblas32"):
        try:
            import scipy_openblas32 as sob
            lib = sob.get_lib_dir()
            return Blas("scipy-openblas32", (f"-L{lib}", f"-l{sob.get_library()}", f"-Wl,-rpath,{lib}"), "scipy_sgemm_")
        except ImportError:
            if which != "auto":
                raise BuildError("BLAS 'scipy-openblas32' asked for but not installed: pip install scipy-openblas32") from None
    if which in ("auto", "system"):
        for lib in ("openblas", "blas"):
            if ctypes.util.find_library(lib):
                return Blas(f"system {lib}", (f"-l{lib}",), "sgemm_")
        raise BuildError("no BLAS found: pip install scipy-openblas32 (recommended), or install a system BLAS "
                         "(Debian/Ubuntu: apt-get install libopenblas-dev)")
    raise BuildError(f"unknown BLAS choice {which!r}: use 'scipy-openblas32' or 'system'")


def shared_blas_library(b: Blas | None = None) -> str:
    """The shared library file (or soname) of a BLAS, for loaders such as ROOT's gSystem.Load."""
    b = b or find_blas()
    if b.name == "scipy-openblas32":
        import scipy_openblas32 as sob
        return str(Path(sob.get_lib_dir()) / f"lib{sob.get_library()}.so")
    return ctypes.util.find_library(b.name.split()[-1]) or b.name.split()[-1]


def link_flags(blas: str | None = None) -> str:
    """Compiler flags to build a program against any generated header: the C++ standard, the name
    of the BLAS sgemm symbol, -pthread (a Session may split a batch over std::threads) and the
    BLAS link line (`jaxpr2sofie flags` prints them). A header that calls no BLAS builds with or
    without them."""
    b = find_blas(blas)
    return " ".join(["-std=c++17", f"-DJ2S_SGEMM={b.sgemm}", "-pthread", *b.link])


@functools.lru_cache(maxsize=None)
def compiler_version(compiler: str) -> str:
    """The compiler's own `--version` text: part of every cache key, so an upgraded compiler at the
    same path never reuses a binary the old one built."""
    try:
        res = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60)
        return res.stdout.strip() or res.stderr.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _is_gcc(compiler: str) -> bool:
    version = compiler_version(compiler)
    return "clang" not in version.lower() and ("g++" in version or "GCC" in version or "gcc" in version)


# The standard headers every generated header includes: parsed once per compiler and flag set into
# a precompiled header (about half of a small model's compile time), see `_precompiled`.
_PCH_TEXT = "".join(f"#include <{h}>\n" for h in sorted(set(INCLUDES + THREAD_INCLUDES))) + \
    "#if defined(__SSE2__) || defined(_M_X64)\n#include <xmmintrin.h>\n#endif\n"


def _precompiled(compiler: str, flags: list) -> list:
    """`-include` flags naming a precompiled header of the standard includes built with exactly
    `flags` (g++ only; JAXPR2SOFIE_PCH=0 turns it off). Where g++ finds it unusable it reads the
    headers as text instead, so a precompiled header changes build time, never the program."""
    if os.environ.get("JAXPR2SOFIE_PCH") == "0" or not _is_gcc(compiler):
        return []
    key = hashlib.sha256("\0".join(["pch", _PCH_TEXT, compiler, compiler_version(compiler), *flags]).encode())
    d = cache_dir() / f"pch-{key.hexdigest()[:24]}"
    if not (d / "j2s_std.hxx.gch").exists():
        work = Path(tempfile.mkdtemp(prefix="pch-", dir=cache_dir()))
        (work / "j2s_std.hxx").write_text(_PCH_TEXT)
        res = subprocess.run([compiler, *flags, "-x", "c++-header", "j2s_std.hxx", "-o", "j2s_std.hxx.gch"],
                             cwd=work, capture_output=True, text=True)
        if res.returncode != 0:   # no precompiled header then: the build itself reports real problems
            shutil.rmtree(work, ignore_errors=True)
            return []
        try:
            work.rename(d)
        except OSError:   # another process built it meanwhile
            shutil.rmtree(work, ignore_errors=True)
    return ["-include", str(d / "j2s_std.hxx")]


def compile_cached(files: dict, sources: list, target: str, compiler: str, flags: list, link: list = (),
                   what: str = "the generated code", tag: str = "", keep_failed: bool = False) -> Path:
    """The one way generated C++ is compiled: write `files` ({name: text}) into a fresh folder of
    the cache, run `compiler flags sources -o target link` there, and move the folder into place
    under a content hash (the files, the compiler and its version, the flags and the link line)
    with one atomic rename, so concurrent builds of the same code never see half a folder. A
    cached result is returned without compiling. g++ builds include a precompiled header of the
    standard includes (`_precompiled`). On failure BuildError shows the command and the
    compiler's message; `keep_failed` leaves the folder for inspection (its path is in the message)."""
    parts = [tag, compiler, compiler_version(compiler), *flags, "--", *link, "--", *sources, target]
    for name in sorted(files):
        parts += [name, files[name]]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    out = cache_dir() / f"{tag}{key}"
    result = out / target
    if result.exists():
        return result
    work = Path(tempfile.mkdtemp(prefix=f"{tag}{Path(target).stem}-", dir=cache_dir()))
    for name, text in files.items():
        (work / name).write_text(text)
    pch = _precompiled(compiler, [f for f in flags if f != "-shared"])
    cmd = [compiler, *flags, *pch, *sources, "-o", target, *link]
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if res.returncode != 0:
        if not keep_failed:
            shutil.rmtree(work, ignore_errors=True)
        where = f" in {work}" if keep_failed else ""
        raise BuildError(f"compiling {what} failed ({' '.join(cmd)}{where}):\n{res.stderr[-4000:]}")
    try:
        work.rename(out)
    except OSError:   # another process built the same code meanwhile
        shutil.rmtree(work, ignore_errors=True)
    return result


def thread_flags(graph) -> list:
    """-pthread for a header whose Session starts std::threads (rows split over n_threads)."""
    return ["-pthread"] if splittable(graph) else []


def compile_library(graph, cxx=None, blas=None, flags=None) -> Path:
    """Build the shared library of a graph's header plus its C entry point; cached by content hash."""
    header, needs = render(graph)
    capi = c_api_source(graph, f"{graph.name}.hxx")
    compiler = find_compiler(cxx)
    needs_blas = bool(needs & BLAS_HELPERS)
    b = find_blas(blas) if needs_blas else None
    flags = list(flags or DEFAULT_FLAGS)
    # JAXPR2SOFIE_STRICT=1 (set by the test suite) turns any compiler warning into a failure
    strict = ["-Werror"] if os.environ.get("JAXPR2SOFIE_STRICT") == "1" else []
    cmd_tail = flags + WARNINGS + strict + thread_flags(graph) + ["-fPIC", "-shared"]
    if b:
        cmd_tail.append(f"-DJ2S_SGEMM={b.sgemm}")
    return compile_cached({f"{graph.name}.hxx": header, "capi.cpp": capi}, ["capi.cpp"], f"lib{graph.name}.so",
                          compiler, cmd_tail, list(b.link) if b else [], keep_failed=True)


def private_weights(graph, prefix: str) -> tuple:
    """(temporary folder, path, WrittenWeights) of a weight file only our own builds read: binary,
    never text (nothing to format or parse); text stays generate()'s default, for SOFIE's users."""
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    path = Path(tmp.name) / f"{graph.name}.dat"
    return tmp, path, write_weights(graph, path, "binary")


class CompiledModel:
    """The generated C++ loaded in this process. Call it with NumPy arrays in the flattened pytree
    order of the example input; returns one array, or a tuple for several outputs. A model with a
    dynamic batch takes any batch: its Session is rebuilt, larger, when a batch above its
    max_batch arrives. `n_threads` > 1 splits a large batch over that many threads when the
    model's rows are independent (see `threads_used()`); otherwise it runs on one thread."""

    def __init__(self, graph, lib_path: Path, weight_file: Path | None = None, n_threads: int = 1):
        if not isinstance(n_threads, int) or n_threads < 1:
            raise ValueError(f"n_threads={n_threads!r}: give a positive int (1: the calling thread only)")
        self.n_threads = n_threads
        self._min_rows = None
        self.graph = graph
        self.lib_path = Path(lib_path)
        self._tmp = None
        self.written = None   # the WrittenWeights of a weight file written here
        if weight_file is None:
            self._tmp, weight_file, self.written = private_weights(graph, "j2s-weights-")
        self.weight_file = Path(weight_file)
        self._lib = ctypes.CDLL(str(self.lib_path))
        self._lib.j2s_create_threads.restype = ctypes.c_void_p
        self._lib.j2s_create_threads.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                                 ctypes.c_char_p, ctypes.c_int]
        self._lib.j2s_threads_used.restype = ctypes.c_size_t
        self._lib.j2s_threads_used.argtypes = [ctypes.c_void_p]
        self._lib.j2s_set_min_rows_per_thread.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self._lib.j2s_run.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_void_p)]
        self._lib.j2s_destroy.argtypes = [ctypes.c_void_p]
        self.dynamic = graph.dynamic
        self._session, self.max_batch = None, 0
        self._open(graph.max_batch or 1)
        self.inputs = [(n, graph.tensors[n].shape, np.dtype(graph.tensors[n].dtype)) for n in graph.inputs]
        self.outputs = [(graph.tensors[n].shape, np.dtype(graph.tensors[n].dtype)) for n in graph.outputs]

    def _open(self, max_batch: int) -> None:
        err = ctypes.create_string_buffer(2048)
        session = self._lib.j2s_create_threads(str(self.weight_file).encode(), max_batch, self.n_threads, err, len(err))
        if not session:
            raise WeightFileError(err.value.decode(errors="replace"))
        self.close()
        self._session, self.max_batch = session, max_batch
        if self._min_rows:
            self._lib.j2s_set_min_rows_per_thread(session, self._min_rows)

    @property
    def splittable(self) -> bool:
        """Whether n_threads > 1 can split a batch here (a dynamic batch whose rows are independent)."""
        return splittable(self.graph)

    def threads_used(self) -> int:
        """Threads the last call ran on (1 when the batch was small or the rows are not independent)."""
        return int(self._lib.j2s_threads_used(self._session))

    def set_min_rows_per_thread(self, rows: int) -> None:
        """Split a batch only when every thread gets at least `rows` rows (the default comes from
        the model's FLOPs per row, so that a thread is worth starting)."""
        self._min_rows = max(1, int(rows))
        self._lib.j2s_set_min_rows_per_thread(self._session, self._min_rows)

    def _check(self, args):
        """The inputs as contiguous arrays of the model's dtypes, and the batch they carry."""
        if len(args) != len(self.inputs):
            raise InputError(f"the model takes {len(self.inputs)} input(s) "
                             f"({', '.join(n for n, _, _ in self.inputs)}), got {len(args)}")
        arrays, batch = [], None
        for a, (name, shape, dtype) in zip(args, self.inputs):
            a = np.asarray(a)
            n = dims.match_shape(shape, a.shape)
            if n is False or (batch is not None and n is not None and n != batch):
                want = tuple(shape) if not self.dynamic else "(" + ", ".join(map(repr, shape)) + ")"
                raise InputError(f"input '{name}' has shape {a.shape}, the model was converted for {want}"
                                 + (f" with batch N={batch} from the other inputs" if batch is not None else "")
                                 + ("; convert again with an example input of the new shape, or with "
                                    "batch=\"dynamic\" for any batch" if not self.dynamic else ""))
            batch = n if n is not None else batch
            if a.dtype == np.float64 and dtype == np.float32:
                a = a.astype(np.float32)   # as JAX itself takes float64 arrays (without jax_enable_x64)
            if a.dtype != dtype:
                raise InputError(f"input '{name}' has dtype {a.dtype}, the model expects {dtype}; "
                                 f"pass x.astype(np.{dtype.name})")
            arrays.append(np.ascontiguousarray(a))
        return arrays, batch

    def __call__(self, *args):
        arrays, batch = self._check(args)
        if self.dynamic:
            if batch == 0:
                raise InputError("a batch of 0 events: the generated Session takes 1 <= batch <= max_batch")
            if batch > self.max_batch:
                self._open(batch)   # a larger batch than ever before: a Session sized for it
        n = batch or 0
        outs = [np.empty(dims.evaluate_shape(s, n), d) for s, d in self.outputs]
        ins = (ctypes.c_void_p * max(1, len(arrays)))(*[a.ctypes.data for a in arrays])
        ous = (ctypes.c_void_p * max(1, len(outs)))(*[o.ctypes.data for o in outs])
        self._lib.j2s_run(self._session, n, ins, ous)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def close(self):
        if getattr(self, "_session", None):
            self._lib.j2s_destroy(self._session)
            self._session = None

    def __del__(self):
        self.close()


_TIMING_MAIN = """\
#include "{header}"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

// usage: timing WEIGHTS [ITERS [REPS]]: prints the ns per call of each of REPS repetitions
int main(int argc, char** argv) {{
   const long iters = argc > 2 ? std::atol(argv[2]) : 1000;
   const int reps = argc > 3 ? std::atoi(argv[3]) : 5;
   {ns}::Session s({session});
{buffers}
   for (long i = 0; i < iters / 10 + 1; ++i) {run};   // warm up
   for (int rep = 0; rep < reps; ++rep) {{
      auto t0 = std::chrono::steady_clock::now();
      for (long i = 0; i < iters; ++i) {run};
      auto t1 = std::chrono::steady_clock::now();
      std::printf("%.1f\\n", std::chrono::duration<double, std::nano>(t1 - t0).count() / iters);
   }}
   return 0;
}}
"""

# one BLAS thread: batch-1 latency is what matters, and threads only add jitter
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class TimingHarness:
    """A built C++ timing program for one graph (Session::run in a loop, no Python in it) and its
    weight file. `run(iters, reps)` returns the ns per call of each repetition of `iters` calls."""

    def __init__(self, exe: Path, weight_file: Path, keep=None):
        self.exe, self.weight_file = Path(exe), Path(weight_file)
        self._keep = keep     # the temporary folder of the weight file lives as long as the harness

    def run(self, iters: int, reps: int = 5) -> list:
        env = dict(os.environ, **ONE_THREAD)
        res = subprocess.run([str(self.exe), str(self.weight_file), str(int(iters)), str(int(reps))],
                             capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise BuildError(f"the timing harness {self.exe} failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
        return [float(v) for v in res.stdout.split()]

    def close(self) -> None:
        """Remove the weight file now rather than whenever the interpreter gets to it."""
        if self._keep is not None:
            self._keep.cleanup()
            self._keep = None


def build_timing_harness(graph, cxx=None, blas=None, flags=None, batch: int | None = None,
                         n_threads: int = 1) -> TimingHarness:
    """Compile the timing program of a graph (cached by content hash, like `compile_library`) and
    write its weights. A model whose batch is chosen at run time is timed at `batch` (default: its
    max_batch); a fixed-batch model at its own batch. `n_threads` goes to the Session (a dynamic
    batch: rows split over threads where the model allows it, see `splittable`)."""
    header, needs = render(graph)
    compiler = find_compiler(cxx)
    b = find_blas(blas) if needs & BLAS_HELPERS else None
    abi = SessionABI.of(graph)
    ports = abi.inputs + abi.outputs
    n = (batch or graph.max_batch or 1) if graph.dynamic else 1
    sizes = [max(1, dims.evaluate(graph.tensors[x].size, n)) for x in [*graph.inputs, *graph.outputs]]
    buffers = "\n".join(f"   std::vector<{p.ctype}> b{k}({size}, 1);" for k, (p, size) in enumerate(zip(ports, sizes)))
    data = [f"b{k}.data()" for k in range(len(ports))]
    main = _TIMING_MAIN.format(header=f"{graph.name}.hxx", ns=abi.namespace, buffers=buffers,
                               session=abi.constructor_args("argv[1]", str(n), str(int(n_threads))),
                               run=abi.run_call("s", str(n), data[:len(abi.inputs)], data[len(abi.inputs):]))
    cmd_tail = [*(flags or DEFAULT_FLAGS), *([f"-DJ2S_SGEMM={b.sgemm}"] if b else []), *thread_flags(graph)]
    exe = compile_cached({f"{graph.name}.hxx": header, "main.cpp": main}, ["main.cpp"], "timing", compiler, cmd_tail,
                         list(b.link) if b else [], what="the timing harness", tag="timing-")
    keep, weight_file, _ = private_weights(graph, "j2s-timing-")
    return TimingHarness(exe, weight_file, keep)


def time_in_cpp(graph, iters: int = 1000, cxx=None, blas=None, flags=None, batch: int | None = None,
                n_threads: int = 1) -> float:
    """Nanoseconds per `run()` call, timed inside a C++ program (best of 5 repetitions of `iters`
    calls, after a warm-up), so Python and ctypes overheads are excluded. A model whose batch is
    chosen at run time is timed at `batch` (default: its max_batch), its Session built with
    `n_threads` (BLAS stays on one thread either way)."""
    harness = build_timing_harness(graph, cxx=cxx, blas=blas, flags=flags, batch=batch, n_threads=n_threads)
    try:
        return min(harness.run(iters, reps=5))
    finally:
        harness.close()
