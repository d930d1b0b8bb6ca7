"""The parts of the Session that split a batch over threads (`Session(weight_file, max_batch, n_threads)`).

Only a dynamic-batch graph whose rows are independent (`rows.split_refusal`) gets them. Its
Session then holds one set of intermediate buffers per thread (`Buffers`): the calling thread's
for max_batch rows, as without threads, each other thread's for ceil(max_batch / n_threads)
rows. The n_threads - 1 helper threads are started once, with the Session, and parked between
calls (`detail::ThreadPool`): `run(batch, ...)` cuts the batch into contiguous chunks of rows,
wakes the helpers for every chunk but the first, which the calling thread runs itself, and waits
for them; each chunk runs the same generated body (`run_rows`) on its own buffers with the input
and output pointers moved to its first row. A wake-up costs microseconds where a thread start and
join per call cost tens, so a split pays from batches 16 times smaller than before. A batch too
small to pay for it (fewer than 2 * min rows per thread, set from the FLOPs of a row) runs on the
calling thread alone, as a one-thread Session does, so batch-1 latency is unchanged. The default n_threads is 1: ROOT's RDataFrame already runs
one Session per slot, and more threads per Session would oversubscribe the cores.
"""
from __future__ import annotations

import re

from ..ir.dims import per_event
from ..ir.rows import blocked, row_elements, split_refusal
from ..ir.tensor import ctype

# A chunk should hold about this much work (in FLOPs, ~5 us on one core) before another thread is
# worth waking: a parked helper of the pool takes a few microseconds to start on its chunk.
CHUNK_FLOPS = 300_000
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


THREAD_POOL = """\
// Helper threads started once, with the Session, and parked between runs: a split batch costs a
// wake-up (microseconds) instead of a thread start and join per call (tens of microseconds). A
// helper that finished its chunk spins for a moment (kSpin) before it sleeps, as the next call of
// a loop over events usually comes at once; the caller likewise while it waits for the helpers.
// The spin is short: on a machine with more runnable threads than cores, a spinning thread takes
// the core its own Session's other thread is waiting for.
class ThreadPool {
public:
   explicit ThreadPool(size_t workers) {
      for (size_t w = 1; w <= workers; ++w) {
         try {
            fThreads.emplace_back([this, w] { loop(w); });
         } catch (const std::system_error&) {   // no more threads to be had: work with those started
            break;
         }
      }
   }
   ~ThreadPool() {
      {
         std::lock_guard<std::mutex> lock(fMutex);
         fStop.store(true);
      }
      fWake.notify_all();
      for (std::thread& t : fThreads)
         t.join();
   }
   ThreadPool(const ThreadPool&) = delete;
   ThreadPool& operator=(const ThreadPool&) = delete;
   size_t size() const { return fThreads.size(); }
   // task(context, w) on every helper w = 1..size(), while the caller does its own share; then wait().
   void start(void (*task)(void*, size_t), void* context) {
      fTask = task;
      fContext = context;
      fPending.store(fThreads.size(), std::memory_order_relaxed);
      {
         std::lock_guard<std::mutex> lock(fMutex);
         fGeneration.fetch_add(1, std::memory_order_release);
      }
      fWake.notify_all();
   }
   void wait() {
      auto done = [this] { return fPending.load(std::memory_order_acquire) == 0; };
      if (!spin_until(done)) {
         std::unique_lock<std::mutex> lock(fMutex);
         fDone.wait(lock, done);
      }
   }

private:
   static constexpr int kSpin = 20;   // microseconds

   // Whether ready() came true within kSpin.
   template <class Ready>
   static bool spin_until(Ready ready) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpin);
      while (!ready())
         if (std::chrono::steady_clock::now() > until)
            return false;
      return true;
   }
   void loop(size_t w) {
      size_t seen = 0;
      auto fresh = [&] { return fGeneration.load(std::memory_order_acquire) != seen; };
      for (;;) {
         if (!spin_until([&] { return fresh() || fStop.load(); })) {
            std::unique_lock<std::mutex> lock(fMutex);
            fWake.wait(lock, [&] { return fresh() || fStop.load(); });
         }
         if (fStop.load())
            return;
         seen = fGeneration.load(std::memory_order_acquire);
         fTask(fContext, w);
         if (fPending.fetch_sub(1, std::memory_order_acq_rel) == 1) {   // the last one: wake the caller
            std::lock_guard<std::mutex> lock(fMutex);
            fDone.notify_one();
         }
      }
   }
   std::vector<std::thread> fThreads;
   std::mutex fMutex;
   std::condition_variable fWake;   // helpers: a task is there, or the pool stops
   std::condition_variable fDone;   // the caller: every helper finished
   std::atomic<size_t> fGeneration{0};   // one more per start(): a helper runs each once
   std::atomic<size_t> fPending{0};      // helpers still on the current task
   std::atomic<bool> fStop{false};
   void (*fTask)(void*, size_t) = nullptr;
   void* fContext = nullptr;
};
"""
HELPERS = {"thread_pool": THREAD_POOL}


def emit_members(w, g, assign, emit_allocate) -> None:
    """The per-thread buffers and the thread bookkeeping, in place of a single arena."""
    w.need("thread_pool")
    w.comment("Intermediate buffers of one thread: one arena, pointers into it.")
    with w.block("struct Buffers", tail=";"):
        w.line("std::vector<std::uint64_t> fArena;")
        for tname in assign:
            w.line(f"{ctype(g.tensors[tname].dtype)}* tensor_{tname} = nullptr;")
        emit_allocate()
    w.line("std::vector<Buffers> fBuffers;   // [0]: the calling thread's, for max_batch rows")
    w.line("std::unique_ptr<detail::ThreadPool> fPool;   // the other threads (a pointer: the Session stays movable)")
    w.line("std::vector<std::exception_ptr> fErrors;   // per chunk: rethrown after every thread joined")
    w.line("size_t fMaxBatch = 0;")
    w.line("size_t fThreads = 1;")
    w.line(f"size_t fMinRows = {min_rows(g)};   // least rows per thread (about {CHUNK_FLOPS:.0e} FLOPs)")
    w.line("size_t fThreadsUsed = 0;")


def emit_allocate(w) -> None:
    w.comment("The calling thread's buffers hold max_batch rows, the other threads' a chunk of them.")
    with w.block("void allocate(size_t max_batch)"):
        with w.block("if (fThreads > 1)"):
            w.line("fPool = std::make_unique<detail::ThreadPool>(fThreads - 1);")
            w.line("fThreads = 1 + fPool->size();   // as many as could be started")
        w.line("fBuffers.resize(fThreads);")
        w.line("fBuffers[0].allocate(max_batch);")
        w.line("for (size_t t = 1; t < fThreads; ++t)")
        w.line("   fBuffers[t].allocate((max_batch + fThreads - 1) / fThreads);")
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
    w.comment("The current split batch, for the helper threads: rows per chunk, the batch, its pointers.")
    w.line("size_t fJobRows = 0;")
    w.line("size_t fJobBatch = 0;")
    for p in params:
        kind, name = p.rsplit(" ", 1)
        w.line(f"{kind} fJob_{name} = nullptr;")
    w.comment("Writes every output into caller-owned memory. On one thread it allocates nothing; a batch")
    w.comment("split over threads wakes the Session's helper threads (the n_threads argument of the constructor).")
    with w.block(f"void run(size_t batch, {', '.join(params)})"):
        check()
        w.line("const size_t chunks = chunks_for(batch);")
        w.line("fThreadsUsed = chunks;")
        with w.block("if (chunks == 1)"):
            w.line(f"run_rows(fBuffers[0], batch, {args});")
            w.line("return;")
        w.line("const size_t per = (batch + chunks - 1) / chunks;")
        w.line("fThreadsUsed = (batch + per - 1) / per;")
        w.line("fJobRows = per;")
        w.line("fJobBatch = batch;")
        for n in names:
            w.line(f"fJob_tensor_{n} = tensor_{n};")
        w.line("fPool->start(&Session::run_helper, this);")
        w.line(f"run_chunk(0, per, batch, {args});")
        w.line("fPool->wait();")
        with w.block("for (std::exception_ptr& e : fErrors)"):
            with w.block("if (e)"):
                w.line("std::exception_ptr first = e;")
                w.line("std::fill(fErrors.begin(), fErrors.end(), nullptr);")
                w.line("std::rethrow_exception(first);")
    w.line()
    w.comment("What helper thread c does for the current batch: its chunk, if the batch has one for it.")
    with w.block("static void run_helper(void* session, size_t c)"):
        w.line("Session& s = *static_cast<Session*>(session);")
        w.line("if (c < s.fThreadsUsed)")
        job = ", ".join(f"s.fJob_tensor_{n}" for n in names)
        w.line(f"   s.run_chunk(c, s.fJobRows, s.fJobBatch, {job});")
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
