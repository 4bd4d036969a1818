"""The serving core's own rules: the in-flight request budget shared by REST and gRPC."""
import threading
import time

import pytest

from serving.core import ServingCore
from serving.errors import ServingError


def _hold(core, nbytes, entered, release):
    with core.admit(nbytes):
        entered.set()
        release.wait(10)


def test_requests_over_the_in_flight_budget_wait_for_room():
    core = ServingCore(store=None, request_timeout=5, max_inflight_request_bytes=100)
    release = threading.Event()
    holders = []
    for _ in range(2):  # 2 x 45 bytes being decoded
        entered = threading.Event()
        holders.append(threading.Thread(target=_hold, args=(core, 45, entered, release)))
        holders[-1].start()
        assert entered.wait(5)
    with core.admit(10):  # fits beside them
        pass
    waited = threading.Event()
    big = threading.Thread(target=_hold, args=(core, 45, waited, release))
    try:
        big.start()
        time.sleep(0.3)
        assert not waited.is_set()  # 45 + 90 > 100: it waits
        release.set()
        assert waited.wait(5)  # and goes once the others are done
    finally:
        release.set()
        for t in holders + [big]:
            t.join(10)


def test_a_request_larger_than_the_budget_runs_alone_and_a_full_budget_times_out():
    core = ServingCore(store=None, request_timeout=0.3, max_inflight_request_bytes=100)
    with core.admit(500):  # alone: admitted, so a request within --max_request_bytes always can
        with pytest.raises(ServingError) as err:
            with core.admit(1):
                pass
    assert err.value.code == "UNAVAILABLE" and "--max_inflight_request_bytes" in err.value.message
    with core.admit(100):  # the budget is free again
        pass


# -- admission by decoded pixels ------------------------------------------------------------

def test_pixel_budget_refuses_at_once_and_keeps_a_quarter_for_small_requests():
    from serving.core import PixelBudget

    budget = PixelBudget(max_request_pixels=600, max_inflight_pixels=1600)  # small: <= 100
    with pytest.raises(ServingError) as err:
        with budget.admit(601):
            pass
    assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.http_status == 413
    assert "--max_request_pixels" in err.value.message
    with budget.admit(600), budget.admit(600):  # large requests: up to 3/4 (1200)
        started = time.monotonic()
        with pytest.raises(ServingError) as err:
            with budget.admit(101):  # large, and 1301 > 1200: refused, not queued
                pass
        assert time.monotonic() - started < 1
        assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.http_status == 429
        assert "--max_inflight_pixels" in err.value.message and "retry" in err.value.message
        with budget.admit(100), budget.admit(100), budget.admit(100), budget.admit(100):
            assert budget.inflight == 1600  # small ones used the last quarter
            with pytest.raises(ServingError):
                with budget.admit(1):
                    pass
    assert budget.inflight == 0 and budget.refused == 2  # the two refused as busy
    with budget.admit(0):  # no images (float pixels, tf.Examples): nothing to count
        pass


def test_pixel_budget_is_released_when_the_request_fails():
    from serving.core import PixelBudget

    budget = PixelBudget(max_request_pixels=75, max_inflight_pixels=100)
    with pytest.raises(RuntimeError):
        with budget.admit(75):
            raise RuntimeError("the model failed")
    assert budget.inflight == 0
    with budget.admit(75):
        pass


def test_pixel_limits_that_could_never_admit_a_request_are_refused():
    from serving.core import PixelBudget

    with pytest.raises(ValueError, match="3/4"):
        PixelBudget(max_request_pixels=80, max_inflight_pixels=100)


def _png(width, height):
    """A real 1-bit PNG: a few KB that decode to width x height pixels."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.slow
def test_a_flood_of_at_limit_photos_leaves_a_normal_request_answered(model_base, images,
                                                                     reference):
    """Clients sending 4-megapixel PNGs (the server's per-image limit) to predict_photo over
    REST and gRPC as fast as they can: beside them, a face crop is answered correctly within
    its deadline every time, and the flood is refused (429 / RESOURCE_EXHAUSTED), not
    queued."""
    import base64
    import http.client
    import json

    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.server import ModelServer

    photo = _png(2000, 2000)
    server = ModelServer(model_base, "age", max_image_pixels=4_000_000,
                         max_request_pixels=4_000_000, max_inflight_pixels=6_000_000,
                         file_system_poll_wait_seconds=0).start()
    stop = threading.Event()
    outcomes = {"rest": [], "grpc": []}

    def rest_flood():
        body = json.dumps({"signature_name": "predict_photo", "instances": [
            {"image_bytes": {"b64": base64.b64encode(photo).decode()}}]})
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        for _ in range(200):
            if stop.is_set():
                break
            conn.request("POST", "/v1/models/age:predict", body)
            response = conn.getresponse()
            response.read()
            outcomes["rest"].append(response.status)
        conn.close()

    def grpc_flood():
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "age"
        request.model_spec.signature_name = "predict_photo"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([photo], dtype=tf.string))
        for _ in range(200):
            if stop.is_set():
                break
            try:
                stub.Predict(request, timeout=30)
                outcomes["grpc"].append("OK")
            except grpc.RpcError as e:
                outcomes["grpc"].append(e.code().name)
        channel.close()

    flood = [threading.Thread(target=f) for f in (rest_flood, rest_flood, grpc_flood,
                                                  grpc_flood)]
    try:
        for thread in flood:
            thread.start()
        deadline = time.monotonic() + 60
        while min(map(len, outcomes.values())) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # the flood is under way on both protocols
        want = reference(images[:1])["age"]
        body = json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(
            images[0]).decode()}}]})
        for _ in range(5):
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
            conn.request("POST", "/v1/models/age:predict", body)  # socket.timeout past 10 s
            response = conn.getresponse()
            answer = json.loads(response.read())
            conn.close()
            assert response.status == 200, answer
            np.testing.assert_allclose(answer["predictions"][0]["age"], want[0], atol=1e-4)
    finally:
        stop.set()
        for thread in flood:
            thread.join(60)
        server.stop()
    assert 429 in outcomes["rest"], outcomes["rest"]
    assert "RESOURCE_EXHAUSTED" in outcomes["grpc"], outcomes["grpc"]
    assert set(outcomes["rest"]) <= {200, 429} and set(outcomes["grpc"]) <= {
        "OK", "RESOURCE_EXHAUSTED"}
