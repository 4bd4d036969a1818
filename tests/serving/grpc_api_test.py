"""gRPC API over a real socket with the official tensorflow-serving-api stubs."""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving.client import ClientError, predict_grpc

TOL = 1e-4


@pytest.fixture
def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def _request(image_bytes=None, signature="", name="age", version=None, **tensors):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    images = image_bytes
    if images is not None and len(images) == 0:
        request.inputs["image_bytes"].dtype = tf.string.as_datatype_enum
        request.inputs["image_bytes"].tensor_shape.dim.add().size = 0
    elif images is not None:
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    for key, value in tensors.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_predict(stubs, images, reference):
    predict, _ = stubs
    response = predict.Predict(_request(images, key=np.array([b"a", b"b", b"c", b"d"][
        :len(images)], dtype=object)), timeout=20)
    assert response.model_spec.name == "age" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    out = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    ref = reference(images)
    np.testing.assert_allclose(out["age"], ref["age"], atol=TOL)
    np.testing.assert_allclose(out["age_distribution"], ref["age_distribution"], atol=TOL)
    np.testing.assert_allclose(out["gender_probability"], ref["gender_probability"], atol=TOL)
    assert out["gender"].tolist() == ref["gender"].tolist()
    assert out["key"].tolist() == [b"a", b"b", b"c", b"d"][:len(images)]


def test_predict_output_filter_and_version(stubs, images):
    predict, _ = stubs
    request = _request(images[:1], signature="serving_default", version=1)
    request.output_filter.append("age")
    response = predict.Predict(request, timeout=20)
    assert list(response.outputs) == ["age"]


def test_metadata_and_status(stubs):
    predict, models = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "age"
    response = predict.GetModelMetadata(request, timeout=20)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    assert set(sig_map.signature_def) == {"serving_default", "predict_images", "serve_tf_examples",
                                          "predict_photo"}
    assert response.model_spec.version.value == 1
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "age"
    got = models.GetModelStatus(status, timeout=20)
    assert [(s.version, s.state) for s in got.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    assert got.model_version_status[0].status.error_code == 0


@pytest.mark.parametrize("make, code", [
    (lambda imgs: _request([b"not an image"]), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda imgs: _request([b"\xff\xd8\xff\xe0broken"]), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda imgs: _request(imgs[:1], signature="nope"), grpc.StatusCode.NOT_FOUND),
    (lambda imgs: _request(imgs[:1], name="other"), grpc.StatusCode.NOT_FOUND),
    (lambda imgs: _request(imgs[:1], version=5), grpc.StatusCode.NOT_FOUND),
    (lambda imgs: _request(imgs[:1], pixels=np.zeros([1, 2], np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda imgs: _request([]), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda imgs: _request(signature="predict_images", images=np.zeros([1, 8], np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda imgs: _request(signature="predict_images", images=np.zeros([1, 8, 8, 3], np.int32)),
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda imgs: _request(key=np.array([b"k"], dtype=object)), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda imgs: _request([b"\xff\xd8\xff" + bytes(2 << 20)]), grpc.StatusCode.RESOURCE_EXHAUSTED),
])
def test_bad_requests_get_status_codes(stubs, images, make, code):
    predict, _ = stubs
    with pytest.raises(grpc.RpcError) as err:
        predict.Predict(make(images), timeout=20)
    assert err.value.code() == code, err.value.details()
    assert err.value.details()
    # and the server keeps serving
    assert tf.make_ndarray(predict.Predict(_request(images[:1]), timeout=20).outputs["age"]).shape == (1,)


def test_python_client_api(server, images, reference):
    out = predict_grpc(f"127.0.0.1:{server.grpc_port}", images, keys=[str(i) for i in
                                                                       range(len(images))])
    assert [o["key"] for o in out] == [str(i) for i in range(len(images))]
    np.testing.assert_allclose([o["age"] for o in out], reference(images)["age"], atol=TOL)
    assert {o["gender"] for o in out} <= {"M", "F"}
    with pytest.raises(ClientError) as err:
        predict_grpc(f"127.0.0.1:{server.grpc_port}", [b"garbage"])
    assert err.value.code == "INVALID_ARGUMENT"


def test_server_down_is_a_clear_timely_error(images):
    import socket
    import time

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    started = time.monotonic()
    with pytest.raises(ClientError) as err:
        predict_grpc(f"127.0.0.1:{port}", images[:1], timeout=2)
    assert err.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 10


# -- hostile input ---------------------------------------------------------------------------

def test_inputs_of_different_lengths_get_invalid_argument_and_never_stop_the_batch_threads(
        stubs, server, images):
    predict, models = stubs
    mismatched = _request(images[:2], key=np.array([b"only one"], dtype=object))
    for _ in range(2 * len(server.batcher._workers) + 1):
        with pytest.raises(grpc.RpcError) as err:
            predict.Predict(mismatched, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "0th-dimension" in err.value.details()
    assert tf.make_ndarray(predict.Predict(_request(images[:1]), timeout=10)
                           .outputs["age"]).shape == (1,)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "age"
    assert models.GetModelStatus(status, timeout=10).model_version_status[0].state == (
        get_model_status_pb2.ModelVersionStatus.AVAILABLE)


def _broadcast_request(signature, name, dtype, shape, value_field, value):
    """A PredictRequest whose tensor declares `shape` and holds one value (TensorFlow
    repeats it to fill the shape)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "age"
    request.model_spec.signature_name = signature
    tensor = request.inputs[name]
    tensor.dtype = dtype.as_datatype_enum
    for d in shape:
        tensor.tensor_shape.dim.add().size = d
    getattr(tensor, value_field).append(value)
    return request


def test_a_tiny_request_declaring_a_huge_tensor_is_refused_before_it_is_expanded(
        limited_server, images):
    channel = grpc.insecure_channel(f"127.0.0.1:{limited_server.grpc_port}")
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        # 100 bytes on the wire, 4.9 GB as float32 once expanded
        huge = _broadcast_request("predict_images", "images", tf.float32,
                                  [100000, 64, 64, 3], "float_val", 1.0)
        assert huge.ByteSize() < 100
        with pytest.raises(grpc.RpcError) as err:
            predict.Predict(huge, timeout=60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
        assert "[100000, 64, 64, 3]" in err.value.details()
        # one string repeated 100000 times: small once expanded, but far over the batch size
        many = _broadcast_request("", "image_bytes", tf.string, [100000], "string_val",
                                  images[0])
        with pytest.raises(grpc.RpcError) as err:
            predict.Predict(many, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "Task size 100000 is larger than maximum input batch size 16" in (
            err.value.details())
        assert tf.make_ndarray(predict.Predict(_request(images[:1]), timeout=60)
                               .outputs["age"]).shape == (1,)
    finally:
        channel.close()
    assert limited_server.alive(), limited_server.log()


def test_a_decompression_bomb_gets_invalid_argument_within_bounded_memory(limited_server, images,
                                                                        png_bomb):
    channel = grpc.insecure_channel(f"127.0.0.1:{limited_server.grpc_port}")
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        with pytest.raises(grpc.RpcError) as err:
            predict.Predict(_request([images[0], png_bomb]), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        details = err.value.details()
        assert "input 'image_bytes'[1]" in details and "20000x20000" in details, details
        assert tf.make_ndarray(predict.Predict(_request(images[:1]), timeout=60)
                               .outputs["age"]).shape == (1,)
    finally:
        channel.close()
    assert limited_server.alive(), limited_server.log()


def test_a_truncated_jpeg_says_which_input_and_why(stubs, images):
    predict, _ = stubs
    truncated = images[2][:len(images[2]) // 2]
    with pytest.raises(grpc.RpcError) as err:
        predict.Predict(_request([images[0], images[1], truncated]), timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith("input 'image_bytes'[2]: ") and "JPEG" in details, details
    assert "Graph execution error" not in details
