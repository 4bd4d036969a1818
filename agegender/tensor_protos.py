"""TensorProto <-> NumPy: the tensors of TF Serving's gRPC API, for the server
(`serving.tensor_codec`, which adds the checks a request from a client needs) and the Python
API's gRPC backend (`analyzer.tf_serving`). One owner, below both."""
import numpy as np
import tensorflow as tf

_DT_STRING = tf.string.as_datatype_enum


def proto_shape(proto):
    """The declared shape of a TensorProto (no values are read)."""
    return [d.size for d in proto.tensor_shape.dim]


def proto_to_array(proto):
    """TensorProto -> ndarray; fast paths for strings and packed numbers, else tf.make_ndarray.

    Expands a proto with fewer values than elements (TensorFlow's rule): check its shape
    first (`serving.tensor_codec.array_from_proto`) when it comes from a client."""
    shape = proto_shape(proto)
    if proto.dtype == _DT_STRING and len(proto.string_val) == int(np.prod(shape)):
        out = np.empty(len(proto.string_val), dtype=object)
        out[:] = list(proto.string_val)
        return out.reshape(shape)
    dtype = tf.as_dtype(proto.dtype)
    if proto.tensor_content and dtype.is_numpy_compatible and dtype != tf.string:
        np_dtype = np.dtype(dtype.as_numpy_dtype)
        if len(proto.tensor_content) == int(np.prod(shape)) * np_dtype.itemsize:
            return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()
    return tf.make_ndarray(proto)


def array_to_proto(array):
    """ndarray -> TensorProto; fast paths for bytes/str and plain numeric arrays."""
    from tensorflow.core.framework import tensor_pb2

    array = np.asarray(array)
    proto = tensor_pb2.TensorProto()
    if array.dtype == object or array.dtype.kind in "SU":
        values = [v.encode("utf-8") if isinstance(v, str) else v for v in array.reshape(-1)]
        if all(isinstance(v, bytes) for v in values):
            proto.dtype = _DT_STRING
            for d in array.shape:
                proto.tensor_shape.dim.add().size = d
            proto.string_val.extend(values)
            return proto
        return tf.make_tensor_proto(array)
    if array.dtype.kind in "fiub":
        proto.dtype = tf.as_dtype(array.dtype).as_datatype_enum
        for d in array.shape:
            proto.tensor_shape.dim.add().size = d
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
        return proto
    return tf.make_tensor_proto(array)
