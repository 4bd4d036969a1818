"""TF Serving's gRPC API (tensorflow-serving-api protos) on grpcio.

Owns: `PredictionService.Predict` / `GetModelMetadata` and `ModelService.GetModelStatus`
(the other methods answer UNIMPLEMENTED), the gRPC server with its message-size limit, and
turning `ServingError`s into gRPC status codes (INVALID_ARGUMENT, NOT_FOUND, ...).
"""
import logging
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from agegender import serving_contract as contract
from serving import core as core_lib
from serving import tensor_codec
from serving.errors import ServingError, client_message, invalid

log = logging.getLogger(__name__)


def _abort(context, err):
    context.abort(err.grpc_code, client_message(err.message))


def _version(model_spec):
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise ServingError("UNIMPLEMENTED", "version labels are not supported by this server")
    return model_spec.version.value if model_spec.HasField("version") else None


def _guard(method):
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as e:
            _abort(context, e)
        except Exception as e:  # a bug: report it, keep serving
            log.exception("%s failed", method.__name__)
            _abort(context, ServingError("INTERNAL", str(e)))
    wrapper.__name__ = method.__name__
    return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core, max_request_bytes=None):
        self.core = core
        self.max_request_bytes = max_request_bytes

    @_guard
    def Predict(self, request, context):
        model = self.core.model(request.model_spec.name, _version(request.model_spec))
        signature_name = request.model_spec.signature_name or contract.SERVING_DEFAULT
        sd = model.signature_def(signature_name)
        with self.core.admit(request.ByteSize()):
            inputs = tensor_codec.predict_inputs_from_protos(
                request.inputs, sd, max_elements=self.max_request_bytes)
            outputs = self.core.predict(model, signature_name, inputs,
                                        list(request.output_filter))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = model.version
            response.model_spec.signature_name = signature_name
            for name, array in outputs.items():
                response.outputs[name].CopyFrom(tensor_codec.array_to_proto(array))
            return response

    @_guard
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise invalid(f"metadata_field must be ['signature_def'], got {fields}")
        model = self.core.model(request.model_spec.name, _version(request.model_spec))
        return core_lib.metadata_response(model)

    def _unimplemented(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not supported by this server; use Predict")

    Classify = Regress = MultiInference = _unimplemented


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core):
        self.core = core

    @_guard
    def GetModelStatus(self, request, context):
        return self.core.status_response(request.model_spec.name, _version(request.model_spec))

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "model config reload is not supported; "
                      "new versions are picked up from the base path")


class GrpcServer:
    def __init__(self, core, host="127.0.0.1", port=contract.DEFAULT_GRPC_PORT,
                 max_request_bytes=contract.DEFAULT_MAX_REQUEST_BYTES,
                 max_workers=32):
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", max_request_bytes),
                     ("grpc.max_send_message_length", 64 << 20),
                     ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(core, max_request_bytes), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"could not bind gRPC to {host}:{port}")

    def start(self):
        self.server.start()
        return self

    def stop(self, grace=1.0):
        self.server.stop(grace).wait()

