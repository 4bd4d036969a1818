"""Batching: concurrent requests are merged, outputs split back, a bad request fails alone."""
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.batching import BatchingQueue
from serving.errors import ServingError, invalid


class FakeModel:
    """Doubles `x`; fails (like a bad JPEG would) when a row is negative; records batch sizes."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.calls = []

    def run(self, signature, inputs):
        x = inputs["x"]
        self.calls.append(len(x))
        time.sleep(self.delay)
        if (x < 0).any():
            raise invalid("negative input")
        return {"y": x * 2, "n": np.full(len(x), len(x))}


def _concurrently(fns):
    results = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        try:
            results[i] = fns[i]()
        except Exception as e:  # collected for the assertions
            results[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_requests_are_merged_and_split_back():
    model = FakeModel(delay=0.05)
    queue = BatchingQueue(max_batch_size=32, batch_timeout=0.05, wait_when_idle=True)
    try:
        results = _concurrently([
            (lambda i=i: queue.submit(model, "s", {"x": np.array([i, i + 100], np.float32)}))
            for i in range(8)])
    finally:
        queue.stop()
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], [2 * i, 2 * (i + 100)])
    assert sum(model.calls) == 16
    assert len(model.calls) < 8  # merged
    assert queue.stats["merged_batches"] >= 1 and queue.stats["requests"] == 8


def test_max_batch_size_is_respected():
    model = FakeModel(delay=0.02)
    queue = BatchingQueue(max_batch_size=4, batch_timeout=0.05, wait_when_idle=True)
    try:
        _concurrently([(lambda: queue.submit(model, "s", {"x": np.ones(2, np.float32)}))
                       for _ in range(8)])
    finally:
        queue.stop()
    assert max(model.calls) <= 4 and sum(model.calls) == 16


def test_incompatible_requests_are_not_merged():
    model = FakeModel(delay=0.02)
    queue = BatchingQueue(max_batch_size=32, batch_timeout=0.05, wait_when_idle=True)
    try:
        results = _concurrently([
            (lambda: queue.submit(model, "s", {"x": np.ones((1, 2), np.float32)})),
            (lambda: queue.submit(model, "s", {"x": np.ones((1, 3), np.float32)})),
            (lambda: queue.submit(model, "other", {"x": np.ones((1, 2), np.float32)}))])
    finally:
        queue.stop()
    assert [r["y"].shape for r in results] == [(1, 2), (1, 3), (1, 2)]


def test_a_bad_request_fails_alone():
    model = FakeModel(delay=0.05)
    queue = BatchingQueue(max_batch_size=32, batch_timeout=0.1, wait_when_idle=True)
    try:
        results = _concurrently([
            (lambda i=i: queue.submit(model, "s", {"x": np.array([-1.0 if i == 3 else i],
                                                                 np.float32)}))
            for i in range(6)])
    finally:
        queue.stop()
    assert isinstance(results[3], ServingError) and results[3].code == "INVALID_ARGUMENT"
    for i, out in enumerate(results):
        if i != 3:
            assert out["y"].tolist() == [2 * i]
    assert queue.stats["split_after_failure"] >= 1


def test_an_idle_model_does_not_wait_for_the_timeout():
    model = FakeModel()
    queue = BatchingQueue(max_batch_size=16, batch_timeout=2.0)  # wait_when_idle=False
    try:
        started = time.monotonic()
        out = queue.submit(model, "s", {"x": np.array([3.0], np.float32)})
        alone = time.monotonic() - started
    finally:
        queue.stop()
    assert out["y"].tolist() == [6.0]
    assert alone < 1.0  # not the 2 s timeout: nothing else was running


def test_a_busy_model_lets_the_next_batch_fill():
    # While one batch runs, the next one collects what arrives (up to the timeout), so
    # requests that come in during a run share one batch instead of going one by one.
    model = FakeModel(delay=0.3)
    queue = BatchingQueue(max_batch_size=16, batch_timeout=1.0, num_batch_threads=2)
    try:
        first = threading.Thread(
            target=queue.submit, args=(model, "s", {"x": np.array([0.0], np.float32)}))
        first.start()
        time.sleep(0.1)  # the first request is running alone now
        results = _concurrently([
            (lambda i=i: queue.submit(model, "s", {"x": np.array([i], np.float32)}))
            for i in range(1, 6)])
        first.join(10)
    finally:
        queue.stop()
    assert [r["y"].tolist() for r in results] == [[2 * i] for i in range(1, 6)]
    assert model.calls[0] == 1 and sum(model.calls) == 6
    assert len(model.calls) < 6  # the five later requests were merged


def test_wait_when_idle_waits_like_tf_serving():
    model = FakeModel()
    queue = BatchingQueue(max_batch_size=16, batch_timeout=0.3, wait_when_idle=True)
    try:
        started = time.monotonic()
        queue.submit(model, "s", {"x": np.array([1.0], np.float32)})
        waited = time.monotonic() - started
    finally:
        queue.stop()
    assert waited >= 0.25


def test_full_queue_is_unavailable():
    model = FakeModel(delay=0.3)
    queue = BatchingQueue(max_batch_size=1, batch_timeout=0, max_enqueued=1)
    try:
        results = _concurrently([(lambda: queue.submit(model, "s", {"x": np.ones(1, np.float32)}))
                                 for _ in range(4)])
    finally:
        queue.stop()
    errors = [r for r in results if isinstance(r, ServingError)]
    assert errors and all(e.code == "UNAVAILABLE" for e in errors)


def _grpc_request(image):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "age"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image], dtype=tf.string))
    return request


def test_server_merges_concurrent_grpc_clients_and_isolates_a_corrupt_jpeg(server, images,
                                                                         reference):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = dict(server.batcher.stats)
    corrupt = images[0][:200]  # a JPEG header, then nothing: passes the sniff, fails to decode
    payloads = [corrupt if i == 2 else images[i % len(images)] for i in range(8)]
    try:
        results = _concurrently([(lambda p=p: stub.Predict(_grpc_request(p), timeout=30))
                                 for p in payloads])
    finally:
        channel.close()
    assert isinstance(results[2], grpc.RpcError)
    assert results[2].code() == grpc.StatusCode.INVALID_ARGUMENT
    ref = reference(images)["age"]
    for i, response in enumerate(results):
        if i != 2:
            age = tf.make_ndarray(response.outputs["age"])
            np.testing.assert_allclose(age, [ref[i % len(images)]], atol=1e-4)
    after = server.batcher.stats
    assert after["merged_batches"] > before.get("merged_batches", 0)
    assert after["requests"] - before.get("requests", 0) == 8


def test_two_batch_threads_run_batches_concurrently():
    model = FakeModel(delay=0.1)
    queue = BatchingQueue(max_batch_size=2, batch_timeout=0.01, num_batch_threads=2)
    started = time.monotonic()
    try:
        results = _concurrently([(lambda i=i: queue.submit(model, "s", {"x": np.array([i],
                                                                                       np.float32)}))
                                 for i in range(4)])
    finally:
        queue.stop()
    assert [r["y"].tolist() for r in results] == [[0], [2], [4], [6]]
    assert time.monotonic() - started < 0.35  # two batches of two, side by side


def test_task_size_is_checked_like_tf_serving():
    from serving.batching import task_size

    assert task_size({"a": np.zeros((3, 2)), "b": np.zeros(3)}, 4) == 3
    for inputs, fragment in [
            ({"a": np.zeros(2), "b": np.zeros(1)}, "must have equal 0th-dimension size: 'a' has "
                                                   "2, 'b' has 1"),
            ({"a": np.float32(1.0)}, "at least one dimension"),
            ({"a": np.zeros(5)}, "Task size 5 is larger than maximum input batch size 4"),
            ({}, "at least one input")]:
        with pytest.raises(ServingError) as err:
            task_size(inputs, 4)
        assert err.value.code == "INVALID_ARGUMENT" and fragment in err.value.message


def test_a_request_the_queue_cannot_batch_is_refused_before_it_is_queued():
    model = FakeModel()
    queue = BatchingQueue(max_batch_size=4, num_batch_threads=1)
    try:
        with pytest.raises(ServingError) as err:
            queue.submit(model, "s", {"x": np.ones(2, np.float32), "k": np.ones(1, np.float32)},
                         timeout=5)
        assert err.value.code == "INVALID_ARGUMENT"
        assert queue.submit(model, "s", {"x": np.ones(1, np.float32)}, timeout=5)["y"].tolist() == [
            2.0]
    finally:
        queue.stop()
    assert model.calls == [1]


class UnsplittableModel(FakeModel):
    """Returns outputs that cannot be split back per request when it gets a merged batch."""

    def run(self, signature, inputs):
        out = super().run(signature, inputs)
        if len(inputs["x"]) > 1:
            out["y"] = out["y"].tolist()  # a list has no .ndim: the split fails
        return out


def test_an_exception_inside_a_batch_fails_that_batch_and_the_thread_goes_on():
    model = UnsplittableModel(delay=0.05)
    queue = BatchingQueue(max_batch_size=8, batch_timeout=0.2, num_batch_threads=1,
                          wait_when_idle=True)
    try:
        for _ in range(3):  # each merged batch fails; the one thread serves on every time
            results = _concurrently([
                (lambda i=i: queue.submit(model, "s", {"x": np.array([i], np.float32)},
                                          timeout=5)) for i in range(2)])
            assert all(isinstance(r, ServingError) and r.code == "INTERNAL" for r in results), (
                results)
        out = queue.submit(model, "s", {"x": np.array([4.0], np.float32)}, timeout=5)
        assert out["y"].tolist() == [8.0]
        assert queue.health() is None
    finally:
        queue.stop()
    assert queue.stats["failed_batches"] == 3


class BlockingModel:
    def __init__(self):
        self.release = threading.Event()

    def run(self, signature, inputs):
        self.release.wait(30)
        return {"y": inputs["x"]}


def test_health_says_when_every_batch_thread_is_stuck():
    model = BlockingModel()
    queue = BatchingQueue(max_batch_size=4, num_batch_threads=2, stuck_after=0.2)
    try:
        first = threading.Thread(target=queue.submit,
                                 args=(model, "s", {"x": np.ones(1, np.float32)}))
        first.start()
        time.sleep(0.4)
        assert queue.health() is None  # one of two threads stuck: batches still run
        second = threading.Thread(target=queue.submit,
                                  args=(model, "s", {"x": np.ones(2, np.float32)}))
        second.start()
        time.sleep(0.4)
        assert "all 2 batch threads" in queue.health()
        model.release.set()
        first.join(10)
        second.join(10)
        assert queue.health() is None
    finally:
        model.release.set()
        queue.stop()


def test_status_is_not_available_while_batch_threads_are_stuck(model_base, images):
    # Over the real APIs: a health check that reads AVAILABLE must mean predictions are
    # being answered.
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from serving.client import RestClient
    from serving.server import ModelServer

    srv = ModelServer(model_base, "age", grpc_port=0, rest_port=0, num_batch_threads=1,
                      request_timeout=0.5, file_system_poll_wait_seconds=0).start()
    blocker = BlockingModel()
    rest = RestClient(f"127.0.0.1:{srv.rest_port}", timeout=10)
    try:
        assert rest.status()["model_version_status"][0]["state"] == "AVAILABLE"
        stuck = threading.Thread(target=srv.batcher.submit,
                                 args=(blocker, "s", {"x": np.ones(1, np.float32)}))
        stuck.start()
        deadline = time.monotonic() + 10
        while (rest.status()["model_version_status"][0]["state"] == "AVAILABLE"
               and time.monotonic() < deadline):
            time.sleep(0.1)
        status = rest.status()["model_version_status"][0]
        assert status["state"] == "UNKNOWN" and status["status"]["error_code"] == "UNAVAILABLE"
        assert "batch threads" in status["status"]["error_message"]
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "age"
        got = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request,
                                                                              timeout=10)
        channel.close()
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert got.model_version_status[0].state != available
        blocker.release.set()
        stuck.join(10)
        assert rest.status()["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        blocker.release.set()
        rest.close()
        srv.stop()
