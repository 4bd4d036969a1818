"""What clients read of a failure: TensorFlow's op message, never its graph internals."""
import base64

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.core import PixelBudget
from serving.errors import client_message

INTERNALS = ("{{", "}}", "[[", "function_node", "__inference", "[Op:", "Graph execution error",
             "Detected at node", "stack traces", "/job:localhost")

# TensorFlow 2.21's own texts for a truncated JPEG in a signature's tf.map_fn: the
# exception's message, and the form with the inner function's name that the runtime writes.
EAGER = ("Graph execution error:\n\nDetected at node map/while/decode_image/DecodeImage defined "
         "at (most recent call last):\n<stack traces unavailable>\njpeg::Uncompress failed. "
         "Invalid JPEG data or crop window.\n\t [[{{node map/while/decode_image/DecodeImage}}]] "
         "[Op:__inference_signature_wrapper_serving_default_8851]")
NESTED = ("{{function_node __inference_map_while_body_370_8661}} Improper call to JPEG library "
          "in state 201\n\t [[{{function_node __inference_map_while_body_370_8661}}{{node "
          "map/while/decode_image/DecodeImage}}]] [Op:DecodeImage] name: ")


@pytest.mark.parametrize("raw, says", [
    (EAGER, "jpeg::Uncompress failed. Invalid JPEG data or crop window."),
    (NESTED, "Improper call to JPEG library in state 201"),
])
def test_tensorflow_error_texts_lose_their_internals(raw, says):
    assert client_message(raw) == says


def test_other_messages_pass_unchanged_and_bounded():
    text = "Servable not found for request: Latest(half)"
    assert client_message(text) == text
    assert len(client_message("x" * 100_000)) <= 2000
    assert client_message("") and client_message(None)


@pytest.fixture
def unguarded(server):
    """The test server without its own pixel checks, so an image over the model's in-graph
    limit reaches TensorFlow and fails there, as on a server run with larger limits."""
    core = server.core
    saved = core.max_image_pixels, core.pixels
    core.max_image_pixels, core.pixels = 0, PixelBudget(10 ** 10, 2 * 10 ** 10)
    yield
    core.max_image_pixels, core.pixels = saved


def test_a_request_failing_inside_the_graph_gets_the_ops_message_only(server, rest, unguarded,
                                                                      png_bomb):
    status, out = rest.request("POST", "/v1/models/age:predict", {
        "signature_name": "predict_photo",
        "instances": [{"image_bytes": {"b64": base64.b64encode(png_bomb).decode()}}]})
    assert status == 400, out
    assert "image too large" in out["error"] and "50000000" in out["error"], out
    assert not [s for s in INTERNALS if s in out["error"]], out["error"]

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "age"
    request.model_spec.signature_name = "predict_photo"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([png_bomb], dtype=tf.string))
    try:
        with pytest.raises(grpc.RpcError) as err:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request,
                                                                              timeout=20)
    finally:
        channel.close()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image too large" in err.value.details()
    assert not [s for s in INTERNALS if s in err.value.details()], err.value.details()
