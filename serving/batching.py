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

Isolation: requests are validated before they are queued (tensor_codec), and if a merged
batch still fails (say an undecodable JPEG), each of its requests is re-run alone, so a bad
request fails only its own client.
"""
import collections
import logging
import threading
import time
from concurrent.futures import Future

import numpy as np

from serving.errors import ServingError

log = logging.getLogger(__name__)


class _Task:
    __slots__ = ("model", "signature", "inputs", "rows", "key", "future", "enqueued")

    def __init__(self, model, signature, inputs):
        self.model = model
        self.signature = signature
        self.inputs = inputs
        leading = {a.shape[0] if a.ndim else None for a in inputs.values()}
        # Only requests whose inputs share one 0-th dimension can be merged.
        self.rows = leading.pop() if len(leading) == 1 else None
        self.key = None if self.rows is None else (
            id(model), signature,
            tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items())))
        self.future = Future()
        self.enqueued = time.monotonic()


class BatchingQueue:
    """Merges concurrent `submit` calls into batches; counters in `stats` (for tests/ops)."""

    def __init__(self, max_batch_size=16, batch_timeout=0.002, max_enqueued=1024,
                 num_batch_threads=1, wait_when_idle=False):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.max_enqueued = max_enqueued
        self.wait_when_idle = wait_when_idle
        self._active = 0  # batches running now
        self._pending = collections.deque()
        self._cv = threading.Condition()
        self._running = True
        self.stats = collections.Counter()
        self._workers = [threading.Thread(target=self._loop, name=f"batching-{i}", daemon=True)
                         for i in range(num_batch_threads)]
        for worker in self._workers:
            worker.start()

    def submit(self, model, signature, inputs, timeout=None):
        """Runs `model.run(signature, inputs)` inside a batch; returns this request's outputs."""
        task = _Task(model, signature, inputs)
        with self._cv:
            if not self._running:
                raise ServingError("UNAVAILABLE", "the server is shutting down")
            if len(self._pending) >= self.max_enqueued:
                raise ServingError("UNAVAILABLE", "the batching queue is full; retry later")
            self._pending.append(task)
            self._cv.notify()
        try:
            return task.future.result(timeout=timeout)
        except TimeoutError:
            task.future.cancel()
            raise ServingError("DEADLINE_EXCEEDED", "the request timed out in the batching queue")

    def summary(self):
        s = self.stats
        mean = s["requests"] / s["batches"] if s["batches"] else 0.0
        return (f"{s['batches']} batches, {s['requests']} requests ({mean:.1f} per batch, "
                f"max {s['max_batch_requests']}), {s['merged_batches']} merged, "
                f"{s['split_after_failure']} split after a failure")

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
            if first.key is None or first.rows >= self.max_batch_size:
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

    def _loop(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                batch = [t for t in batch if t.future.set_running_or_notify_cancel()]
                if batch:
                    self._run(batch)
            finally:
                with self._cv:
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
