"""Server-side batching: one queue that merges concurrent requests into model batches.

Owns what TF Serving's `--enable_batching` does for this server: requests that target the
same model version and signature with the same inputs (names, dtypes and per-row shapes)
are concatenated along dimension 0, up to `max_batch_size` rows, waiting at most
`batch_timeout` for a batch to fill; `num_batch_threads` workers run the batches, so the
model sees at most that many batches at a time. Outputs are split back per request.

One difference from TF Serving, on by default (`wait_when_idle=False`): a batch waits for
more requests only while another batch is running. When no batch runs, waiting cannot
save any work the CPU is doing, it only delays the request, so the queued requests go at
once: one client gets the unbatched latency, and under load batches still fill while the
model is busy.

Task size, as TF Serving's batching session and batch scheduler define it: every input of
a request has the same 0-th dimension, its number of rows, and a request of more rows than
`max_batch_size` is refused (INVALID_ARGUMENT, "Task size N is larger than maximum input
batch size M"; TF Serving refuses it too unless large-batch splitting is on, which this
server does not do). `task_size` is the one check; the core applies it to every request,
with batching on or off, because it is also the bound on what one request makes the model
allocate.

Isolation: requests are validated before they are queued (tensor_codec, `task_size`), and if
a merged batch still fails (say an undecodable JPEG), each of its requests is re-run alone,
so a bad request fails only its own client. Whatever goes wrong inside a batch (a model
that raises, outputs that cannot be split) fails the requests of that batch and nothing
else: a batch thread never dies, and `health()` says when batch threads are stuck, so a
status check can tell that predictions are not being answered.
"""
import collections
import logging
import threading
import time
from concurrent.futures import Future

import numpy as np

from serving.errors import ServingError, invalid

log = logging.getLogger(__name__)


def task_size(inputs, max_batch_size):
    """The rows of a request ({name: ndarray}), checked as TF Serving's batching does."""
    if not inputs:
        raise invalid("Batching Run() must have at least one input tensor")
    sizes = {}
    for name, array in inputs.items():
        if not np.ndim(array):
            raise invalid(f"Batching Run() input tensors must have at least one dimension; "
                          f"input '{name}' is a scalar")
        sizes[name] = np.shape(array)[0]
    if len(set(sizes.values())) > 1:
        raise invalid("Batching Run() input tensors must have equal 0th-dimension size: "
                      + ", ".join(f"'{n}' has {s}" for n, s in sorted(sizes.items())))
    size = next(iter(sizes.values()))
    if size > max_batch_size:
        raise invalid(f"Task size {size} is larger than maximum input batch size "
                      f"{max_batch_size} (--max_batch_size); send at most {max_batch_size} "
                      "rows per request")
    return size


class _Task:
    __slots__ = ("model", "signature", "inputs", "rows", "key", "future", "enqueued")

    def __init__(self, model, signature, inputs, rows):
        self.model = model
        self.signature = signature
        self.inputs = inputs
        self.rows = rows
        # Only requests with the same inputs (names, dtypes, per-row shapes) can be merged.
        self.key = (id(model), signature,
                    tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items())))
        self.future = Future()
        self.enqueued = time.monotonic()


class BatchingQueue:
    """Merges concurrent `submit` calls into batches; counters in `stats` (for tests/ops)."""

    def __init__(self, max_batch_size=16, batch_timeout=0.002, max_enqueued=1000,
                 num_batch_threads=1, wait_when_idle=False, stuck_after=30.0):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.max_enqueued = max_enqueued
        self.wait_when_idle = wait_when_idle
        # A batch running longer than this is "stuck" for health(): its requests have timed
        # out (the server passes its request timeout).
        self.stuck_after = stuck_after
        self._active = 0  # batches running now
        self._running_since = {}  # worker index -> monotonic start of the batch it runs
        self._pending = collections.deque()
        self._cv = threading.Condition()
        self._running = True
        self.stats = collections.Counter()
        self._workers = [self._start_worker(i) for i in range(num_batch_threads)]

    def _start_worker(self, index):
        worker = threading.Thread(target=self._loop, args=(index,), name=f"batching-{index}",
                                  daemon=True)
        worker.start()
        return worker

    def submit(self, model, signature, inputs, timeout=None):
        """Runs `model.run(signature, inputs)` inside a batch; returns this request's outputs."""
        task = _Task(model, signature, inputs, task_size(inputs, self.max_batch_size))
        with self._cv:
            if not self._running:
                raise ServingError("UNAVAILABLE", "the server is shutting down")
            self._replace_dead_workers()
            if len(self._pending) >= self.max_enqueued:
                raise ServingError("UNAVAILABLE", "the batching queue is full; retry later")
            self._pending.append(task)
            self._cv.notify()
        try:
            return task.future.result(timeout=timeout)
        except TimeoutError:
            task.future.cancel()
            raise ServingError("DEADLINE_EXCEEDED", "the request timed out in the batching queue")

    def health(self):
        """None while batches are being answered, else why not (for the status API)."""
        with self._cv:
            if not self._running:
                return "the server is shutting down"
            self._replace_dead_workers()
            now = time.monotonic()
            stuck = [now - t for t in self._running_since.values() if now - t > self.stuck_after]
            if len(stuck) == len(self._workers):
                return (f"all {len(self._workers)} batch threads have been running one batch "
                        f"for more than {self.stuck_after:g} s (the longest {max(stuck):.0f} s); "
                        f"{len(self._pending)} requests are waiting")
        return None

    def _replace_dead_workers(self):
        # Defence in depth (with self._cv held): _loop catches everything, so this should
        # never fire; if it does, a dead thread must not silently shrink the pool to nothing.
        for i, worker in enumerate(self._workers):
            if not worker.is_alive():
                log.error("batch thread %s died; starting a new one", worker.name)
                self._running_since.pop(i, None)
                self._workers[i] = self._start_worker(i)

    def summary(self):
        s = self.stats
        mean = s["requests"] / s["batches"] if s["batches"] else 0.0
        return (f"{s['batches']} batches, {s['requests']} requests ({mean:.1f} per batch, "
                f"max {s['max_batch_requests']}), {s['merged_batches']} merged, "
                f"{s['split_after_failure']} split after a failure, "
                f"{s['failed_batches']} failed inside the batch loop")

    def stop(self):
        with self._cv:
            self._running = False
            self._cv.notify_all()
        for worker in self._workers:
            worker.join(timeout=10)
        for task in self._pending:
            task.future.set_exception(ServingError("UNAVAILABLE", "the server shut down"))

    # -- worker -----------------------------------------------------------------------------
    def _take_batch(self):
        with self._cv:
            while self._running and not self._pending:
                self._cv.wait()
            if not self._running:
                return None
            first = self._pending.popleft()
            batch = [first]
            if first.rows >= self.max_batch_size:
                self._active += 1
                return batch
            rows = first.rows
            deadline = first.enqueued + self.batch_timeout
            while True:
                for task in list(self._pending):
                    if task.key == first.key and rows + task.rows <= self.max_batch_size:
                        self._pending.remove(task)
                        batch.append(task)
                        rows += task.rows
                remaining = deadline - time.monotonic()
                if (rows >= self.max_batch_size or remaining <= 0 or not self._running
                        or (self._active == 0 and not self.wait_when_idle)):
                    self._active += 1
                    return batch
                self._cv.wait(remaining)

    def _loop(self, index):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            with self._cv:
                self._running_since[index] = time.monotonic()
            try:
                batch = [t for t in batch if t.future.set_running_or_notify_cancel()]
                if batch:
                    self._run(batch)
            except Exception as e:  # a bug or a misbehaving model: fail this batch, go on
                log.exception("a batch of %d requests failed in the batch loop", len(batch))
                with self._cv:
                    self.stats["failed_batches"] += 1
                error = ServingError("INTERNAL", f"the batch failed: {type(e).__name__}: {e}")
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(error)
            finally:
                with self._cv:
                    self._running_since.pop(index, None)
                    self._active -= 1
                    self._cv.notify_all()  # a collecting worker may go now

    def _run(self, batch):
        with self._cv:
            self.stats["batches"] += 1
            self.stats["requests"] += len(batch)
            if len(batch) > 1:
                self.stats["merged_batches"] += 1
            self.stats["max_batch_requests"] = max(self.stats["max_batch_requests"], len(batch))
            self.stats["rows"] += sum(t.rows for t in batch)
        first = batch[0]
        if len(batch) == 1:
            self._run_alone(first)
            return
        merged = {n: np.concatenate([t.inputs[n] for t in batch]) for n in first.inputs}
        try:
            outputs = first.model.run(first.signature, merged)
        except Exception:
            # One bad request must not fail the others: run each on its own.
            with self._cv:
                self.stats["split_after_failure"] += 1
            for task in batch:
                self._run_alone(task)
            return
        total = sum(t.rows for t in batch)
        start = 0
        for task in batch:
            end = start + task.rows
            task.future.set_result({
                n: (a[start:end] if a.ndim and a.shape[0] == total else a)
                for n, a in outputs.items()})
            start = end

    @staticmethod
    def _run_alone(task):
        try:
            task.future.set_result(task.model.run(task.signature, task.inputs))
        except Exception as e:  # delivered to the waiting request thread
            task.future.set_exception(e)
