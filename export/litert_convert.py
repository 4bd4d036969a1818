"""Keras model -> LiteRT flatbuffer bytes in one of the quantization modes.

Owns the modes (`QUANTIZATIONS`; what each does is in `export.export_litert`'s doc and
docs/litert.md), the SavedModel the converter reads (`write_saved_model`: one signature,
`pixels` [1, S, S, 3] -> the heads' raw outputs), int8's selective quantization (the softmax
and the layers int8 hurts most stay float) and the scans of a converted file's ops
(`float_ops`, `int8_input_quantization`). Builtin ops only: a model that needs the Flex
delegate is refused with the ops named (`ExportError`).
"""
import csv
import io
import re

import numpy as np
import tensorflow as tf

from export.errors import ExportError
from export.litert_metadata import INPUT, SIGNATURE, as_text

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# Ops an int8 file may run in float: the boundary (de)quantization, and the heads' softmax.
# A softmax over 101 one-year bins gives probabilities near 0.01, and int8's steps of 1/256
# moved the age read from them by years (docs/litert.md); in float it costs nothing.
INT8_FLOAT_OPS = ("QUANTIZE", "DEQUANTIZE", "SOFTMAX")
DEFAULT_INT8_FLOAT_LAYERS = 3


def write_saved_model(model, spec, directory):
    """The Keras model as a SavedModel with one signature: `pixels` [1, S, S, 3] -> raw outputs.

    Through Keras' own `ExportArchive`, which tracks the model's variables so the converter
    freezes them into the file; a plain `tf.Module` wrapping the model converted here to a
    file that read uninitialised variables and answered NaN (docs/litert.md).
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE, lambda pixels: model(pixels, training=False),
        [tf.TensorSpec([1, spec.img_dim, spec.img_dim, 3], tf.float32, name=INPUT)])
    archive.write_out(directory, verbose=False)


_UNSUPPORTED_OP = re.compile(r"'(tf\.\w+)' op is neither a custom op nor a flex op")


def _converter_message(error):
    """What a converter error means, without its pages of MLIR locations."""
    text = str(error)
    ops = sorted(set(_UNSUPPORTED_OP.findall(text)))
    if ops:
        return (f"LiteRT has no builtin kernel for {', '.join(ops)} (TensorFlow ops through "
                f"the Flex delegate are not allowed: an app's plain runtime lacks them)")
    lines = []
    for line in text.splitlines():
        if "error" in line.lower():
            # `<unknown>:0: error: loc(callsite(...)): the message`: keep the message.
            lines.append(line.rsplit(")): ", 1)[-1].strip())
    return " | ".join(dict.fromkeys(lines or [text.strip() or type(error).__name__]))[:1500]


def convert(saved_model_dir, quantization, representative=None, int8_float_layers=0):
    """A SavedModel (from `write_saved_model`) -> (LiteRT flatbuffer bytes, the names of the
    layers left in float: the softmax and, in int8, the `int8_float_layers` layers whose
    int8 error on the representative images is largest)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    # Builtin ops only: a model that needs TensorFlow ops (the Flex delegate) would not run
    # on the plain runtime an app ships, so it is refused here instead.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        if quantization != "int8":
            return converter.convert(), []
        if representative is None or not len(representative):
            raise ExportError("int8 needs representative images")

        def dataset():
            for image in representative:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = dataset
        # TensorFlow's selective quantization (the quantization debugger is its documented
        # entry point; the file gets no debug ops): calibrate, then quantize every op but
        # the softmax and the layers int8 hurts most.
        options = tf.lite.experimental.QuantizationDebugOptions
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=dataset,
            debug_options=options(denylisted_ops=["SOFTMAX"]))
        float_layers = _worst_int8_layers(debugger, int8_float_layers)
        if float_layers:
            debugger.options = options(denylisted_ops=["SOFTMAX"], denylisted_nodes=float_layers)
        content = debugger.get_nondebug_quantized_model()
    except ExportError:
        raise
    except Exception as e:  # ConverterError, RuntimeError from calibration, ValueError, ...
        raise ExportError(f"the converter refused the model ({quantization}): "
                          f"{_converter_message(e)}") from None
    left = [op for op, output in float_ops(content, allowed=INT8_FLOAT_OPS)
            if output not in float_layers]
    if left:
        raise ExportError(f"int8: these ops have no int8 kernel and would run in float: "
                          f"{', '.join(sorted(set(left)))}")
    return content, float_layers


def _worst_int8_layers(debugger, count):
    """The `count` layers whose int8 output differs most from float on the debugger's
    images, in quantization steps (root mean squared error / scale, the debugger's own
    measure of a layer's quantization error)."""
    if count <= 0:
        return []
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    scored = []
    for row in csv.DictReader(buffer):
        scale = float(row["scale"])
        if scale > 0 and row["op_name"] != "SOFTMAX":
            scored.append((np.sqrt(float(row["mean_squared_error"])) / scale,
                           row["tensor_name"]))
    return [name for _, name in sorted(scored, reverse=True)[:count]]


def float_ops(content, allowed=()):
    """(op name, output tensor name) of each op (but `allowed`) that reads or writes a
    float32 tensor."""
    from ai_edge_litert import schema_py_generated as schema_fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    found = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
            tensors = [subgraph.tensors[i] for i in list(op.inputs) + list(op.outputs) if i >= 0]
            if name not in allowed and any(t.type == schema_fb.TensorType.FLOAT32
                                           for t in tensors):
                found.append((name, as_text(subgraph.tensors[op.outputs[0]].name)))
    return found


def int8_input_quantization(content):
    """(scale, zero point) of the int8 tensor the input QUANTIZE op writes, or None: an app
    that feeds int8 itself (and removes that op) computes q = round(x / scale) + zero_point."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if (flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == "QUANTIZE"
                    and op.inputs[0] in list(subgraph.inputs)):
                q = subgraph.tensors[op.outputs[0]].quantization
                return float(q.scale[0]), int(q.zeroPoint[0])
    return None
