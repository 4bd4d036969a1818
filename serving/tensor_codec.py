"""Request/response encodings <-> NumPy tensors, with TF Serving's rules.

Owns: the REST predict JSON (row format `instances` -> `predictions`, columnar format
`inputs` -> `outputs`, `{"b64": ...}` binary values, `_bytes` output names), TensorProto
conversion for gRPC, and checking decoded tensors against a SignatureDef (input names,
dtypes, ranks and fixed dimensions). Everything that fails here is INVALID_ARGUMENT, except
a TensorProto that would expand to more elements than its request could carry (below).

A TensorProto may hold fewer values than its shape has elements: TensorFlow repeats the
last one (`tf.make_ndarray` broadcasts a single value to the declared shape), so a 100-byte
request can declare [100000, 64, 64, 3]. Every element of a tensor that is not broadcast
takes at least one byte of the request, so a tensor is refused (RESOURCE_EXHAUSTED) before
it is expanded when its shape has more elements than `max_elements` (the server passes
--max_request_bytes).
"""
import base64
import binascii
import json
import re

import numpy as np
import tensorflow as tf

from agegender.tensor_protos import array_to_proto, proto_shape, proto_to_array  # noqa: F401
from serving.errors import ServingError, invalid

B64 = "b64"


def _is_b64_object(value):
    return isinstance(value, dict) and len(value) == 1 and B64 in value


def _b64decode(text):
    if not isinstance(text, str):
        raise invalid("the value of a 'b64' object must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        if re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):  # also accept the web-safe alphabet
            try:
                return base64.urlsafe_b64decode(text)
            except (binascii.Error, ValueError):
                pass
        raise invalid("Unable to base64 decode a 'b64' value") from None


def _strings(value, name):
    """Nested JSON value of a DT_STRING input -> nested lists of bytes."""
    if _is_b64_object(value):
        return _b64decode(value[B64])
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_strings(v, name) for v in value]
    raise invalid(f"input '{name}' is a string tensor; got a JSON {type(value).__name__}")


def json_to_array(value, dtype, name):
    """One input's JSON value -> ndarray of the signature's dtype (rectangular)."""
    if dtype == tf.string:
        nested = _strings(value, name)
        try:
            array = np.array(nested, dtype=object)
        except ValueError:
            raise invalid(f"input '{name}' is not a rectangular list") from None
        if array.size and not all(isinstance(v, bytes) for v in array.flat):
            raise invalid(f"input '{name}' is not a rectangular list of strings")
        return array
    if _contains_object(value):
        raise invalid(f"input '{name}' of type {dtype.name} got a non-numeric value")
    try:
        return np.asarray(value, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError) as e:
        raise invalid(f"input '{name}' could not be read as {dtype.name}: {e}") from None


def _contains_object(value):
    if isinstance(value, (dict, str)):
        return True
    if isinstance(value, list):
        return any(_contains_object(v) for v in value)
    return False


def check_input(array, tensor_info, name):
    """Checks an input array against its TensorInfo (rank and fixed dims)."""
    check_shape(array.shape, tensor_info, name)


def check_shape(shape, tensor_info, name):
    """Checks a shape (sequence of ints) against an input's TensorInfo."""
    if tensor_info.tensor_shape.unknown_rank:
        return
    dims = [d.size for d in tensor_info.tensor_shape.dim]
    if len(shape) != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, shape)):
        expected = "[" + ", ".join("?" if d < 0 else str(d) for d in dims) + "]"
        raise invalid(f"input '{name}' has shape {list(shape)}; the signature expects "
                      f"{expected}")


def _dtype(tensor_info):
    return tf.as_dtype(tensor_info.dtype)


def _required_inputs(signature_def):
    return [n for n in signature_def.inputs if n not in signature_def.defaults]


def parse_json_body(body):
    """Raw request body -> dict; INVALID_ARGUMENT on malformed JSON (NaN/Infinity allowed)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid(f"JSON Parse error: {e}") from None
    except RecursionError:
        raise invalid("JSON Parse error: the document is nested too deeply") from None
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object")
    return data


def predict_inputs_from_json(data, signature_def):
    """Predict request JSON (parsed) -> ({input name: ndarray}, "row" | "columnar")."""
    try:
        return _predict_inputs_from_json(data, signature_def)
    except RecursionError:  # nesting that json accepted but the conversion cannot follow
        raise invalid("an input is nested too deeply for any tensor") from None


def _predict_inputs_from_json(data, signature_def):
    has_rows, has_cols = "instances" in data, "inputs" in data
    if has_rows == has_cols:
        raise invalid("the request must have exactly one of 'instances' (row format) or "
                      "'inputs' (columnar format)")
    names = list(signature_def.inputs)
    if has_rows:
        inputs = _rows_to_inputs(data["instances"], signature_def, names)
        fmt = "row"
    else:
        inputs = _columns_to_inputs(data["inputs"], signature_def, names)
        fmt = "columnar"
    for name, array in inputs.items():
        check_input(array, signature_def.inputs[name], name)
    missing = [n for n in _required_inputs(signature_def) if n not in inputs]
    if missing:
        raise invalid(f"missing input(s) {missing}; the signature takes {sorted(names)}")
    return inputs, fmt


def _single_name(signature_def, names):
    """The input a bare (unnamed) value fills: the only input, or the only required one."""
    if len(names) == 1:
        return names[0]
    required = _required_inputs(signature_def)
    if len(required) == 1:
        return required[0]
    raise invalid(f"the signature has inputs {sorted(names)}: name them "
                  f"(row format: a list of objects; columnar: an object)")


def _check_names(keys, names):
    unknown = sorted(set(keys) - set(names))
    if unknown:
        raise invalid(f"input(s) {unknown} not in the signature; it takes {sorted(names)}")


def _rows_to_inputs(instances, signature_def, names):
    if not isinstance(instances, list):
        raise invalid("'instances' must be a list")
    if not instances:
        raise invalid("'instances' is empty: nothing to predict")
    named = isinstance(instances[0], dict) and not _is_b64_object(instances[0])
    if not named:
        name = _single_name(signature_def, names)
        if any(isinstance(v, dict) and not _is_b64_object(v) for v in instances):
            raise invalid("mixed named and unnamed instances")
        return {name: json_to_array(instances, _dtype(signature_def.inputs[name]), name)}
    keys = set(instances[0])
    for row in instances:
        if not isinstance(row, dict) or _is_b64_object(row) or set(row) != keys:
            raise invalid("every instance must be an object with the same input names")
    _check_names(keys, names)
    inputs = {}
    for name in keys:
        dtype = _dtype(signature_def.inputs[name])
        rows = [json_to_array(row[name], dtype, name) for row in instances]
        if any(r.shape != rows[0].shape for r in rows):
            raise invalid(f"input '{name}' has different shapes in different instances")
        inputs[name] = np.stack(rows) if dtype != tf.string else _stack_objects(rows)
    return inputs


def _stack_objects(rows):
    out = np.empty((len(rows),) + rows[0].shape, dtype=object)
    for i, r in enumerate(rows):
        out[i] = r.item() if r.ndim == 0 else r
    return out


def _columns_to_inputs(columns, signature_def, names):
    if isinstance(columns, dict) and not _is_b64_object(columns):
        _check_names(columns, names)
        inputs = {n: json_to_array(v, _dtype(signature_def.inputs[n]), n)
                  for n, v in columns.items()}
    else:
        name = _single_name(signature_def, names)
        inputs = {name: json_to_array(columns, _dtype(signature_def.inputs[name]), name)}
    for name, array in inputs.items():
        if array.ndim and array.shape[0] == 0:
            raise invalid(f"input '{name}' is empty: nothing to predict")
    return inputs


def _json_value(array, name):
    if array.dtype == object or array.dtype.kind in "SU":
        binary = name.endswith("_bytes")

        def conv(v):
            if isinstance(v, str):
                v = v.encode("utf-8")
            if not binary:
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {B64: base64.b64encode(v).decode("ascii")}
        return np.vectorize(conv, otypes=[object])(array).tolist() if array.ndim else conv(
            array.item())
    return array.tolist()


def predict_response_json(outputs, fmt):
    """Output arrays -> the TF Serving REST response object."""
    if fmt == "row":
        sizes = {a.shape[0] if a.ndim else None for a in outputs.values()}
        if len(sizes) != 1 or None in sizes:
            raise invalid("the row format needs every output to have the same 0-th dimension; "
                          "use the columnar format ('inputs')")
        if len(outputs) == 1:
            (name, array), = outputs.items()
            return {"predictions": _json_value(array, name)}
        cols = {n: _json_value(a, n) for n, a in outputs.items()}
        n = sizes.pop()
        return {"predictions": [{k: v[i] for k, v in cols.items()} for i in range(n)]}
    if len(outputs) == 1:
        (name, array), = outputs.items()
        return {"outputs": _json_value(array, name)}
    return {"outputs": {n: _json_value(a, n) for n, a in outputs.items()}}


def dumps(obj):
    """JSON text as TF Serving writes it (NaN/Infinity allowed)."""
    return json.dumps(obj, allow_nan=True, separators=(",", ":"))


# --- gRPC -------------------------------------------------------------------------------

# proto_shape, proto_to_array, array_to_proto: agegender.tensor_protos (shared with the
# Python API's gRPC backend).


def array_from_proto(proto, tensor_info, name, max_elements=None):
    dtype = _dtype(tensor_info)
    if proto.dtype != dtype.as_datatype_enum:
        raise invalid(f"input '{name}' has dtype {tf.as_dtype(proto.dtype).name}; the signature "
                      f"expects {dtype.name}")
    shape = proto_shape(proto)
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in shape):
        raise invalid(f"input '{name}' has no fully defined shape: {shape}")
    check_shape(shape, tensor_info, name)
    elements = int(np.prod(shape, dtype=object))  # Python ints: no overflow
    if max_elements is not None and elements > max_elements:
        raise ServingError(
            "RESOURCE_EXHAUSTED",
            f"input '{name}' declares shape {shape}, {elements:,} elements, more than a "
            f"request of at most {max_elements:,} bytes can carry (--max_request_bytes); a "
            "TensorProto with fewer values than elements would be expanded to that size")
    try:
        array = proto_to_array(proto)
    except Exception as e:  # malformed TensorProto (size/shape mismatch, ...)
        raise invalid(f"input '{name}' is not a valid TensorProto: {e}") from None
    check_input(array, tensor_info, name)
    return array


def predict_inputs_from_protos(proto_inputs, signature_def, max_elements=None):
    names = list(signature_def.inputs)
    _check_names(proto_inputs.keys(), names)
    inputs = {n: array_from_proto(p, signature_def.inputs[n], n, max_elements)
              for n, p in proto_inputs.items()}
    missing = [n for n in _required_inputs(signature_def) if n not in inputs]
    if missing:
        raise invalid(f"missing input(s) {missing}; the signature takes {sorted(names)}")
    for name, array in inputs.items():
        if array.ndim and array.shape[0] == 0:
            raise invalid(f"input '{name}' is empty: nothing to predict")
    return inputs
