"""The generated Session's calling convention, described once.

Every piece of C++ that drives a generated header — the C API behind ctypes (`emit.c_api_source`),
the timing harness (`build.build_timing_harness`), the ROOT scorer (`root`), the sanitizer runner
(`sanitize`) — spells the constructor and the `run` call through this description, so a change to
the Session's signature is made here once. It is built from the header's I/O signature line (the
JSON `emit.io_signature` writes), so tools that read a generated folder without the Python model
(jaxpr2sofie.root, in a ROOT process without JAX) use the same description.

    Session(weights)                                  fixed batch
    Session(weights, max_batch[, n_threads])          batch chosen at run time
    run([batch,] const In0* x0, ..., Out0* y0, ...)   inputs, then outputs, row-major
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.tensor import CTYPES

# The C entry points around a Session (emit.c_api_source defines them; ctypes and the sanitizer
# runner call them). `j2s_create` is `j2s_create_threads` with one thread.
C_API = """\
extern "C" {
void* j2s_create_threads(const char* weight_file, size_t max_batch, size_t n_threads, char* err, int errlen);
void* j2s_create(const char* weight_file, size_t max_batch, char* err, int errlen);
size_t j2s_threads_used(void* s);
void j2s_set_min_rows_per_thread(void* s, size_t rows);
void j2s_run(void* s, size_t batch, void** in, void** out);
void j2s_destroy(void* s);
}
"""


def c_entry_points(header: str, session: str, create: str, run: str, threads_used: str = "(void)s;\n   return 1;",
                   min_rows: str = "(void)s;\n   (void)rows;") -> str:
    """The C entry points `C_API` declares, defined around one C++ Session type `session` (ours, or
    SOFIE's own): `create` makes it from weight_file, max_batch and n_threads (statements ending in
    `return new ...`), `run` runs it on s, batch, in and out; `threads_used` and `min_rows` are the
    bodies of those two entry points (by default: one thread, nothing to set)."""
    return f"""#include "{header}"
#include <cstring>
#include <exception>

extern "C" {{
void* j2s_create_threads(const char* weight_file, size_t max_batch, size_t n_threads, char* err, int errlen) {{
   try {{
      {create}
   }} catch (const std::exception& e) {{
      std::strncpy(err, e.what(), errlen - 1);
      err[errlen - 1] = 0;
      return nullptr;
   }}
}}
void* j2s_create(const char* weight_file, size_t max_batch, char* err, int errlen) {{
   return j2s_create_threads(weight_file, max_batch, 1, err, errlen);
}}
size_t j2s_threads_used(void* s) {{
   {threads_used}
}}
void j2s_set_min_rows_per_thread(void* s, size_t rows) {{
   {min_rows}
}}
void j2s_run(void* s, size_t batch, void** in, void** out) {{
   {run}
}}
void j2s_destroy(void* s) {{ delete static_cast<{session}*>(s); }}
}}
"""


@dataclass(frozen=True)
class Port:
    """One input or output: its name, shape (ints; the run-time batch as text, "N", "2*N") and dtype."""
    name: str
    shape: tuple
    dtype: str

    @property
    def ctype(self) -> str:
        return CTYPES[self.dtype]


@dataclass(frozen=True)
class SessionABI:
    model: str
    inputs: tuple
    outputs: tuple
    max_batch: int | None = None    # set when the batch is chosen at run time

    @classmethod
    def from_signature(cls, sig: dict) -> "SessionABI":
        def ports(entries):
            return tuple(Port(e["name"], tuple(e["shape"]), e["dtype"]) for e in entries)
        return cls(sig["model"], ports(sig["inputs"]), ports(sig["outputs"]), sig.get("max_batch"))

    @classmethod
    def of(cls, g) -> "SessionABI":
        from .emit import io_signature
        return cls.from_signature(io_signature(g))

    @property
    def dynamic(self) -> bool:
        return self.max_batch is not None

    @property
    def namespace(self) -> str:
        return f"TMVA_SOFIE_{self.model}"

    def constructor_args(self, source: str, max_batch: str = "", n_threads: str = "") -> str:
        """Arguments of the Session constructor: the weight source (a file name, or a stream and a
        name for messages), then, for a run-time batch, the largest batch and the thread count
        (each left out when not given)."""
        extra = [a for a in (max_batch, n_threads) if a] if self.dynamic else []
        return ", ".join([source, *extra])

    def run_call(self, session: str, batch: str, inputs, outputs, pointer: bool = False) -> str:
        """`session.run(...)` (`session->run` for a pointer): the batch first when it is chosen at
        run time, then one pointer per input and per output, in order."""
        args = ([batch] if self.dynamic else []) + list(inputs) + list(outputs)
        return f"{session}{'->' if pointer else '.'}run({', '.join(args)})"

    def pointer_casts(self, array: str, ports, const: bool) -> list:
        """`static_cast<const T*>(array[k])` for each port: untyped pointers (void**) to typed ones."""
        q = "const " if const else ""
        return [f"static_cast<{q}{p.ctype}*>({array}[{k}])" for k, p in enumerate(ports)]
