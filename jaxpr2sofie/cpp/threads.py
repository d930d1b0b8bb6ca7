"""The parts of the Session that split a batch over threads (`Session(weight_file, max_batch, n_threads)`).

Only a dynamic-batch graph whose rows are independent (`rows.split_refusal`) gets them. Its
Session then holds one set of intermediate buffers per thread (`Buffers`): the calling thread's
for max_batch rows, as without threads, each other thread's for ceil(max_batch / n_threads)
rows. `run(batch, ...)` cuts the batch into contiguous chunks of rows, starts a std::thread per
chunk but the first, which the calling thread runs itself, and joins them; each chunk runs the
same generated body (`run_rows`) on its own buffers with the input and output pointers moved to
its first row. A batch too small to pay for starting a thread (fewer than 2 * min rows per
thread, set from the FLOPs of a row) runs on the calling thread alone, as a one-thread Session
does, so batch-1 latency is unchanged. The default n_threads is 1: ROOT's RDataFrame already runs
one Session per slot, and more threads per Session would oversubscribe the cores.
"""
from __future__ import annotations

import re

from ..ir.dims import per_event
from ..ir.rows import blocked, row_elements, split_refusal
from ..ir.tensor import ctype

# A chunk should hold about this much work (in FLOPs, ~50 us on one core) before another thread
# is worth starting: std::thread start and join cost some tens of microseconds.
CHUNK_FLOPS = 2_000_000
MIN_ROWS_UNKNOWN = 64   # rows per thread when the graph's FLOPs are not known


def splittable(g) -> bool:
    return g.dynamic and not split_refusal(g)


def min_rows(g) -> int:
    """The default least number of rows a thread gets: a chunk carries about CHUNK_FLOPS."""
    lin = per_event(sum(op.flops(g) for op in g.ops))
    per_row = lin[0] if lin else 0
    if per_row <= 0:
        return MIN_ROWS_UNKNOWN
    return max(1, -(-CHUNK_FLOPS // per_row))


def emit_members(w, g, assign, emit_allocate) -> None:
    """The per-thread buffers and the thread bookkeeping, in place of a single arena."""
    w.comment("Intermediate buffers of one thread: one arena, pointers into it.")
    with w.block("struct Buffers", tail=";"):
        w.line("std::vector<std::uint64_t> fArena;")
        for tname in assign:
            w.line(f"{ctype(g.tensors[tname].dtype)}* tensor_{tname} = nullptr;")
        emit_allocate()
    w.line("std::vector<Buffers> fBuffers;   // [0]: the calling thread's, for max_batch rows")
    w.line("std::vector<std::thread> fWorkers;")
    w.line("std::vector<std::exception_ptr> fErrors;   // per chunk: rethrown after every thread joined")
    w.line("size_t fMaxBatch = 0;")
    w.line("size_t fThreads = 1;")
    w.line(f"size_t fMinRows = {min_rows(g)};   // least rows per thread (about {CHUNK_FLOPS:.0e} FLOPs)")
    w.line("size_t fThreadsUsed = 0;")


def emit_allocate(w) -> None:
    w.comment("The calling thread's buffers hold max_batch rows, the other threads' a chunk of them.")
    with w.block("void allocate(size_t max_batch)"):
        w.line("fBuffers.resize(fThreads);")
        w.line("fBuffers[0].allocate(max_batch);")
        w.line("for (size_t t = 1; t < fThreads; ++t)")
        w.line("   fBuffers[t].allocate((max_batch + fThreads - 1) / fThreads);")
        w.line("fWorkers.reserve(fThreads - 1);")
        w.line("fErrors.assign(fThreads, nullptr);")


def emit_accessors(w) -> None:
    w.line("size_t n_threads() const { return fThreads; }")
    w.comment("Threads the last run() used (1: the calling thread alone).")
    w.line("size_t threads_used() const { return fThreadsUsed; }")
    w.comment("A batch is split only when every thread gets at least this many rows (at least 1).")
    w.line("void set_min_rows_per_thread(size_t rows) { fMinRows = rows ? rows : 1; }")
    w.line()


def _offset(g, name: str, param: str) -> str:
    shape = g.tensors[name].shape
    return f"{param} + r0 * {row_elements(shape)}" if blocked(shape) else param


def emit_run(w, g, assign, params, args, check, emit_body) -> None:
    """run() dispatching chunks, run_chunk() for one chunk, run_rows() the generated body."""
    names = list(g.inputs) + list(g.outputs)
    w.comment("Writes every output into caller-owned memory. On one thread it allocates nothing; a batch")
    w.comment("split over threads starts std::threads (see the n_threads argument of the constructor).")
    with w.block(f"void run(size_t batch, {', '.join(params)})"):
        check()
        w.line("const size_t chunks = chunks_for(batch);")
        w.line("fThreadsUsed = chunks;")
        with w.block("if (chunks == 1)"):
            w.line(f"run_rows(fBuffers[0], batch, {args});")
            w.line("return;")
        w.line("const size_t per = (batch + chunks - 1) / chunks;")
        w.line("fThreadsUsed = (batch + per - 1) / per;")
        with w.block("for (size_t c = 1; c < fThreadsUsed; ++c)"):
            with w.block("try"):
                w.line(f"fWorkers.emplace_back([this, c, per, batch, {args}] {{ run_chunk(c, per, batch, {args}); }});")
            with w.block("catch (const std::system_error&)"):   # no thread to be had: do it here
                w.line(f"run_chunk(c, per, batch, {args});")
        w.line(f"run_chunk(0, per, batch, {args});")
        w.line("for (std::thread& t : fWorkers)")
        w.line("   t.join();")
        w.line("fWorkers.clear();")
        with w.block("for (std::exception_ptr& e : fErrors)"):
            with w.block("if (e)"):
                w.line("std::exception_ptr first = e;")
                w.line("std::fill(fErrors.begin(), fErrors.end(), nullptr);")
                w.line("std::rethrow_exception(first);")
    w.line()
    w.comment("How many chunks a batch is cut into: enough rows each, and no more rows than a")
    w.comment("helper thread's buffers hold.")
    with w.block("size_t chunks_for(size_t batch) const"):
        w.line("if (fThreads == 1 || batch < 2 * fMinRows)")
        w.line("   return 1;")
        w.line("const size_t cap = (fMaxBatch + fThreads - 1) / fThreads;")
        w.line("return std::max(std::min(fThreads, batch / fMinRows), (batch + cap - 1) / cap);")
    w.line()
    w.comment("Rows [c * per, min(batch, (c + 1) * per)) on the buffers of thread c.")
    with w.block(f"void run_chunk(size_t c, size_t per, size_t batch, {', '.join(params)}) noexcept"):
        w.line("const size_t r0 = c * per;")
        w.line("const size_t rows = std::min(per, batch - r0);")
        with w.block("try"):
            moved = ", ".join(_offset(g, n, f"tensor_{n}") for n in names)
            w.line(f"run_rows(fBuffers[c], rows, {moved});")
        with w.block("catch (...)"):
            w.line("fErrors[c] = std::current_exception();")
    w.line()
    w.comment("The generated body, for `batch` rows on one thread's buffers.")
    with w.block(f"void run_rows(Buffers& buffers, size_t batch, {', '.join(params)})"):
        w.line("(void)buffers;   // a model without intermediates reads none")
        w.line("(void)batch;")
        start = len(w.lines)
        emit_body()
        _declare_buffers(w, start, g, assign)


def _declare_buffers(w, start: int, g, assign) -> None:
    """Local copies of the buffer pointers the body at w.lines[start:] names: the body reads
    `tensor_x` as it does in a one-thread Session, here from this thread's Buffers."""
    body = "\n".join(w.lines[start:])
    used = dict.fromkeys(re.findall(r"\btensor_(\w+)", body))
    pad = w.indent * w.depth
    own = [n for n in used if n in assign]
    w.lines[start:start] = [f"{pad}{ctype(g.tensors[n].dtype)}* const tensor_{n} = buffers.tensor_{n};" for n in own]
