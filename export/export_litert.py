"""Trained Keras model (job dir) -> one LiteRT (TFLite) file for phones and edge boxes,
quantized, checked against the Keras model before it is written, and self-describing.

Owns: the LiteRT file's signature, its quantization modes, the check that refuses a
converted model that does not answer like the Keras model, and the metadata the file
carries (`read_metadata`; the same JSON is written beside it as `<output>.json`).

The file: signature `serving_default`, input `pixels` float32 [1, S, S, 3], RGB, values
0..255 (the model's own normalisation layer is inside: do not scale or centre them), and the
heads' raw outputs, float32 (`agegender.heads`): `age_distribution` [1, 101] or `age_range`
[1, 21] or `age_scaled` [1, 1], and `gender` [1, 2] when the model has a gender head. The
age in years is computed from them as the metadata's `outputs` say (`heads.describe`).

Quantization (`--quantization`, default float16; figures in docs/litert.md):
  none      float32 weights and activations.
  float16   float16 weights (half the size), computed in float32 on CPU: the same answers.
  dynamic   int8 weights, activations quantized on the fly (a quarter of the size); on x86
            with XNNPACK it was slower than float32 and drifted more than int8.
  int8      integer: int8 weights and activations, calibrated on --representative_images
            images of the TRAIN split of --records_dir, except the heads' final softmax
            (`INT8_FLOAT_OPS`: int8's probability steps of 1/256 moved the age read from
            101 bins by years) and the --int8_float_layers layers (default 3) whose int8
            error on those images is largest (TensorFlow's quantization debugger measures
            it), which stay float; their names are in the metadata. Any other op without
            an int8 kernel is refused rather than left in float. The input and outputs stay float32, as in
            every mode (a QUANTIZE op at the input, float softmax outputs), so the same
            app code calls every file; the input's scale and zero point are in the
            metadata for an app that wants to feed int8 itself.

The check: the converted model and the Keras model run on --check_images images of the
VALIDATION split (never test; synthetic images when there is no --records_dir) through
`agegender.preprocessing.model_input`, the evaluation's function; ages, their spread and the
gender answers are compared with per-mode thresholds (`TOLERANCES`). NaN or infinite
outputs, ages that collapsed to (nearly) one value or drifted too far, an op LiteRT has no
kernel for, or a missing job dir: an `ExportError` saying so, and no file is written.
The file is checked with the maintained runtime (`ai_edge_litert.interpreter`).

Usage:
  python -m export.export_litert --job_dir=runs/exp1 --output=models/age.tflite \\
      [--quantization=none|float16|dynamic|int8] [--records_dir=records/utk_face] \\
      [--representative_images=200] [--check_images=200]
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import csv
import dataclasses
import datetime
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import uuid

import numpy as np
import tensorflow as tf

from agegender import arg_types, console, heads, preprocessing, records, schema
from agegender import serving_contract as contract
from export.export_model import ExportError, model_to_export, synthetic_jpeg

SIGNATURE = contract.SERVING_DEFAULT
INPUT = "pixels"
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
METADATA_NAME = "agegender"  # the flatbuffer's metadata entry holding the JSON
METADATA_FORMAT = "agegender-litert/1"
SIDECAR_SUFFIX = ".json"
DEFAULT_REPRESENTATIVE_IMAGES = 200
DEFAULT_CHECK_IMAGES = 200


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far a converted model may answer from the Keras model on the check images."""
    mean_age: float  # mean |age difference|, years
    max_age: float  # largest |age difference| on one image, years
    gender_agreement: float  # share of images with the same gender answer


# About twice the differences measured on two trained MobileNetV2s (docs/litert.md): float32
# differs by summation order only, float16 and dynamic-range by their rounding, int8 by its
# 8-bit activations. Wide enough for an honest quantization, far below what a collapsed or
# broken file gives (tens of years); accuracy itself is the benchmark's and evaluation's.
TOLERANCES = {
    "none": Tolerance(mean_age=0.01, max_age=0.05, gender_agreement=0.99),
    "float16": Tolerance(mean_age=0.25, max_age=2.0, gender_agreement=0.98),
    "dynamic": Tolerance(mean_age=2.0, max_age=16.0, gender_agreement=0.95),
    "int8": Tolerance(mean_age=2.0, max_age=20.0, gender_agreement=0.9),
}
# Collapse: ages whose spread over the check images shrank below this share of the Keras
# model's (counted only when the Keras ages spread at least MIN_SPREAD years).
COLLAPSE_SPREAD_RATIO = 0.5
MIN_SPREAD = 0.5


def _log():
    return logging.getLogger(__name__)


# -- reading images ------------------------------------------------------------------------
def records_pixels(records_dir, split, spec, count):
    """The first `count` images of one records split as model input, float32 [n, S, S, 3].

    The one place this module reads records: `agegender.records` in its deterministic order,
    each image through `preprocessing.model_input` (what the evaluation and serving use).
    """
    pixels = tf.function(lambda data: preprocessing.model_input(data, spec.img_dim))
    try:
        images = [pixels(tf.constant(e[schema.IMAGE_ENCODED])).numpy() for e in
                  itertools.islice(records.iter_examples(records_dir, split), count)]
    except (records.RecordsNotFoundError, records.RecordsCorruptError) as e:
        raise ExportError(str(e)) from None
    except tf.errors.InvalidArgumentError as e:
        first = (e.message or type(e).__name__).strip().splitlines()[0]
        raise ExportError(f"cannot read the {split!r} records of {records_dir!r} ({first}); "
                          f"rebuild them with `python -m pipeline.build_records`") from None
    if not images:
        raise ExportError(f"the {split!r} split of {records_dir!r} holds no image")
    return np.stack(images).astype(np.float32)


def synthetic_pixels(spec, count):
    """Model input from deterministic synthetic images, when no records are given."""
    return np.stack([preprocessing.model_input(synthetic_jpeg(size=spec.img_dim + 17, seed=i),
                                               spec.img_dim).numpy() for i in range(count)])


# -- conversion ----------------------------------------------------------------------------
def _write_saved_model(model, spec, directory):
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


# Ops an int8 file may run in float: the boundary (de)quantization, and the heads' softmax.
# A softmax over 101 one-year bins gives probabilities near 0.01, and int8's steps of 1/256
# moved the age read from them by years (docs/litert.md); in float it costs nothing.
INT8_FLOAT_OPS = ("QUANTIZE", "DEQUANTIZE", "SOFTMAX")
DEFAULT_INT8_FLOAT_LAYERS = 3


def convert(saved_model_dir, quantization, representative=None, int8_float_layers=0):
    """A SavedModel (from `_write_saved_model`) -> (LiteRT flatbuffer bytes, the names of the
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
                found.append((name, _name(subgraph.tensors[op.outputs[0]].name)))
    return found


# -- running a LiteRT file -----------------------------------------------------------------
class LiteRTModel:
    """A LiteRT file on the maintained runtime (`ai_edge_litert`), called like the Keras
    model: pixels [N, S, S, 3] -> {raw output name: float32 [N, ...]}, one image per
    invocation (the file's batch is 1)."""

    def __init__(self, model_path=None, model_content=None, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        if model_content is None:
            with tf.io.gfile.GFile(model_path, "rb") as f:
                model_content = f.read()
        self.content = bytes(model_content)
        self.interpreter = Interpreter(model_content=self.content, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ExportError(f"{model_path or 'the model'} has no {SIGNATURE!r} signature "
                              f"(it has {sorted(signatures)})")
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        inputs = self.runner.get_input_details()
        if list(inputs) != [INPUT]:
            raise ExportError(f"{model_path or 'the model'}: {SIGNATURE} takes {sorted(inputs)}, "
                              f"expected one {INPUT!r} input")
        self.input_shape = tuple(int(d) for d in inputs[INPUT]["shape"])
        self.output_names = sorted(self.runner.get_output_details())

    def __call__(self, pixels):
        rows = [self.runner(**{INPUT: np.asarray(image, np.float32)[None]})
                for image in pixels]
        return {name: np.concatenate([r[name] for r in rows]).astype(np.float32)
                for name in self.output_names}

    def io_details(self):
        """{'input' or output name: {dtype, shape}} of the signature."""
        details = {"input": self.runner.get_input_details()[INPUT],
                   **self.runner.get_output_details()}
        return {name: {"dtype": np.dtype(d["dtype"]).name,
                       "shape": [int(x) for x in d["shape"]]} for name, d in details.items()}


def keras_outputs(model, pixels, batch_size=32):
    """The Keras model's raw outputs as NumPy, batch by batch."""
    parts = [model(pixels[i:i + batch_size], training=False)
             for i in range(0, len(pixels), batch_size)]
    return {name: np.concatenate([np.asarray(p[name]) for p in parts]).astype(np.float32)
            for name in parts[0]}


# -- the check -----------------------------------------------------------------------------
def compare(reference, converted, spec, tolerance):
    """(figures, problems): how the converted model's answers differ from the reference's
    (raw output dicts on the same images); `problems` lists what exceeds `tolerance`."""
    problems = []
    for name, values in sorted(reference.items()):
        if not np.all(np.isfinite(values)):
            problems.append(f"the Keras model itself outputs NaN or infinite {name}")
    for name, values in sorted(converted.items()):
        if not np.all(np.isfinite(values)):
            problems.append(f"output {name} has NaN or infinite values")
    if problems:
        return {"images": int(len(next(iter(reference.values()))))}, problems
    ages_ref = heads.ages_from_outputs(reference, spec).numpy().astype(np.float64)
    ages = heads.ages_from_outputs(converted, spec).numpy().astype(np.float64)
    diff = np.abs(ages - ages_ref)
    figures = {"images": int(len(ages)),
               "mean_abs_age_difference": float(diff.mean()),
               "max_abs_age_difference": float(diff.max()),
               "age_spread": float(ages.std()), "keras_age_spread": float(ages_ref.std())}
    if figures["keras_age_spread"] >= MIN_SPREAD and (
            figures["age_spread"] < COLLAPSE_SPREAD_RATIO * figures["keras_age_spread"]):
        problems.append(f"the ages collapsed: they spread {figures['age_spread']:.3f} years "
                        f"over the check images, the Keras model's "
                        f"{figures['keras_age_spread']:.3f}")
    if figures["mean_abs_age_difference"] > tolerance.mean_age:
        problems.append(f"ages differ from the Keras model's by "
                        f"{figures['mean_abs_age_difference']:.3f} years on average "
                        f"(at most {tolerance.mean_age} allowed)")
    if figures["max_abs_age_difference"] > tolerance.max_age:
        problems.append(f"an age differs from the Keras model's by "
                        f"{figures['max_abs_age_difference']:.3f} years "
                        f"(at most {tolerance.max_age} allowed)")
    gender = heads.gender_head(spec)
    if gender is not None:
        same = np.mean(reference[gender.output].argmax(-1) == converted[gender.output].argmax(-1))
        figures["gender_agreement"] = float(same)
        if same < tolerance.gender_agreement:
            problems.append(f"the gender answer agrees with the Keras model's on {same:.1%} of "
                            f"the images (at least {tolerance.gender_agreement:.0%} required)")
    return figures, problems


# -- metadata ------------------------------------------------------------------------------
PREPROCESSING = (
    "Decode the image to RGB (grayscale expanded to 3 channels, alpha dropped, EXIF "
    "orientation NOT applied: the served model does not apply it either). Resize it keeping "
    "its aspect ratio so that the SHORTER side is S: scale = S / min(height, width), new "
    "height = max(round(height * scale), S), new width = max(round(width * scale), S); "
    "bilinear with antialiasing and half-pixel centres (TensorFlow's "
    "tf.image.resize(method='bilinear', antialias=True): a triangle filter widened by the "
    "downscale factor; plain bilinear without it aliases when downscaling), output kept as "
    "float (not rounded to 8 bits). Crop the centred S x S square: top = (new "
    "height - S) // 2, left = (new width - S) // 2. Feed float32 values 0..255 as they "
    "are, NHWC [1, S, S, 3]: no division, no mean or standard deviation (the model "
    "normalises inside). The image should be a face crop framed like the training faces "
    "(UTKFace: aligned, centred, the face filling most of the frame).")


def postprocessing(spec):
    """What the served signatures do after the forward pass, for an app to do the same with
    the file's raw outputs (the values come from the spec; the rules from agegender.heads
    and agegender.inference)."""
    return {
        "test_time_flip": bool(spec.test_time_flip),
        "test_time_flip_rule": "when true, also run the horizontally mirrored pixels and "
                               "average the two runs' raw outputs before anything else",
        "age_prior_correction": float(spec.age_prior_correction),
        "age_prior_weights": (None if not spec.age_prior_weights
                              else [float(w) for w in spec.age_prior_weights]),
        "age_prior_rule": "when age_prior_weights is not null, multiply the (averaged) age "
                          "output by these weights, one per class, and divide by the sum, "
                          "before reading the age and its spread (agegender.age_prior)",
        "age_temperature": float(spec.age_temperature),
        "gender_temperature": float(spec.gender_temperature),
        "calibration_rule": "the age is read from the distribution (after the prior "
                            "correction, if any); its spread (standard "
                            "deviation, central 50% and 80% intervals) from "
                            "softmax(log(p + 1e-12) / age_temperature); the gender "
                            "probability is softmax(log(p + 1e-12) / gender_temperature). "
                            "Temperatures were fitted on the validation split.",
        "intervals": [float(c) for c in heads.INTERVALS],
    }


def build_metadata(spec, quantization, io_details, check, representative=None,
                   job_dir=None):
    """The JSON-able metadata a developer calling the file needs (see the module doc)."""
    import ai_edge_litert

    dim = spec.img_dim
    outputs = {}
    for head in heads.for_spec(spec):
        outputs[head.output] = {**head.describe(), **io_details.get(head.output, {})}
    return {
        "format": METADATA_FORMAT,
        "signature": SIGNATURE,
        "quantization": quantization,
        "input": {
            "name": INPUT, **io_details["input"], "layout": "NHWC", "channels": "RGB",
            "size": dim, "range": [0.0, 255.0],
            "normalisation": "inside the model (feed raw 0..255 values); "
                             f"backbone {spec.base_model}",
            "preprocessing": f"S = {dim}. {PREPROCESSING}",
        },
        "outputs": outputs,
        "age_histogram": {"num_age_bins": schema.NUM_AGE_BINS,
                          "max_age_bin": schema.MAX_AGE_BIN,
                          "age_deviation": spec.age_deviation,
                          "note": "training targets were Gaussian age histograms of this "
                                  "deviation (years) over the one-year bins"},
        "genders": list(schema.GENDERS),
        "postprocessing": postprocessing(spec),
        "model_spec": dataclasses.asdict(spec),
        "check": check,
        "representative": representative,
        "source": {"job_dir": str(job_dir) if job_dir else None,
                   "tensorflow": tf.__version__,
                   "checked_with": f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '')}"
                                   .strip(),
                   "exported_at": datetime.datetime.now(datetime.timezone.utc)
                   .isoformat(timespec="seconds")},
    }


def embed_metadata(model_content, metadata):
    """The flatbuffer with `metadata` as JSON in its metadata entry METADATA_NAME (replaced
    if present). TFLite's own metadata map: C++ reads it with
    `FlatBufferModel::ReadAllMetadata()`, Python with `read_metadata`."""
    from ai_edge_litert import schema_py_generated as schema_fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_content))
    data = json.dumps(metadata, sort_keys=True).encode("utf-8")
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    entry = schema_fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or [])
                      if _name(m.name) != METADATA_NAME] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_metadata(model_content):
    """The METADATA_NAME JSON of a LiteRT flatbuffer (bytes), or None when it has none."""
    from ai_edge_litert import schema_py_generated as schema_fb

    content = bytes(model_content)
    try:
        model = schema_fb.Model.GetRootAs(content, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _name(entry.Name()) != METADATA_NAME:
                continue
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # files over 2 GB keep buffers after the flatbuffer
                data = content[buffer.Offset():buffer.Offset() + buffer.Size()]
            else:
                data = buffer.DataAsNumpy().tobytes()
            return json.loads(data.decode("utf-8"))
    except (IndexError, ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ExportError(f"not a LiteRT file with readable metadata ({e})") from None
    return None


def spec_from_metadata(metadata):
    from agegender import model_spec

    return model_spec.ModelSpec.from_json(json.dumps(metadata["model_spec"]))


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


# -- the export ----------------------------------------------------------------------------
DEFAULT_QUANTIZATION = "float16"  # half the size, the same answers (docs/litert.md)


def export_litert(job_dir=None, output=None, quantization=DEFAULT_QUANTIZATION, *, records_dir=None,
                  representative_images=DEFAULT_REPRESENTATIVE_IMAGES,
                  check_images=DEFAULT_CHECK_IMAGES, tolerance=None,
                  int8_float_layers=DEFAULT_INT8_FLOAT_LAYERS, model=None, spec=None):
    """Converts, checks and writes `output` (+ `output`.json); returns the metadata.

    Pass `job_dir` or an in-memory `model` and `spec`. `tolerance`: a `Tolerance` instead of
    `TOLERANCES[quantization]`. `int8_float_layers`: in int8, this many layers with the
    largest int8 error stay float (`convert`). Raises `ExportError` (and writes nothing)
    when the model cannot be converted or the converted model fails the check.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if not output or not str(output).endswith(".tflite"):
        raise ExportError(f"--output must be a .tflite file path, got {output!r}")
    if quantization == "int8" and not records_dir:
        raise ExportError("int8 calibrates on images of the train split: give --records_dir "
                          "(a records directory from `python -m pipeline.build_records`)")
    if quantization == "int8" and representative_images < 1:
        raise ExportError("--representative_images must be at least 1")
    if check_images < 1:
        raise ExportError("--check_images must be at least 1")
    if int8_float_layers < 0:
        raise ExportError("--int8_float_layers must be 0 or more")
    model, spec = model_to_export(job_dir, model, spec)
    tolerance = tolerance or TOLERANCES[quantization]

    # Held-out images for the check first: a records problem shows before the slow part.
    if records_dir:
        check_pixels = records_pixels(records_dir, "validation", spec, check_images)
        check_source = f"validation split of {records_dir}"
    else:
        check_pixels = synthetic_pixels(spec, check_images)
        check_source = "synthetic images (no --records_dir)"
    representative, representative_info = None, None
    if quantization == "int8":
        representative = records_pixels(records_dir, "train", spec, representative_images)
        representative_info = {"images": int(len(representative)),
                               "source": f"train split of {records_dir}"}

    work = tempfile.mkdtemp(prefix="export_litert-")
    try:
        _write_saved_model(model, spec, work)
        content, float_layers = convert(work, quantization, representative,
                                        int8_float_layers)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    try:
        lite = LiteRTModel(model_content=content)
        converted = lite(check_pixels)
    except (RuntimeError, ValueError) as e:  # e.g. a delegate that cannot prepare an op
        raise ExportError(f"the {quantization} model does not run on the LiteRT runtime "
                          f"({e}). Nothing was written to {output}.") from None
    expected = sorted(head.output for head in heads.for_spec(spec))
    if lite.output_names != expected:
        raise ExportError(f"the converted model outputs {lite.output_names}, expected {expected}")
    figures, problems = compare(keras_outputs(model, check_pixels), converted, spec, tolerance)
    figures.update(source=check_source, tolerance=dataclasses.asdict(tolerance))
    if problems:
        hint = (" More --int8_float_layers or --representative_images may help; float16 keeps "
                "the answers at half the size." if quantization == "int8" else "")
        raise ExportError(f"the {quantization} model does not answer like the Keras model on "
                          f"{len(check_pixels)} {check_source}: " + "; ".join(problems)
                          + f". Nothing was written to {output}.{hint}")

    metadata = build_metadata(spec, quantization, lite.io_details(), figures,
                              representative_info, job_dir)
    if quantization == "int8":
        quantized_input = int8_input_quantization(content)  # None: the first layer is float
        metadata["int8"] = {
            "input_quantization": quantized_input and dict(zip(("scale", "zero_point"),
                                                               quantized_input)),
            "float_ops": list(INT8_FLOAT_OPS),
            "float_layers": float_layers,
            "note": "every other op computes in int8. The signature's input and outputs are "
                    "float32 as in every mode: the file quantizes the pixels itself "
                    "(q = round(x / scale) + zero_point) and the softmax outputs are float"}
    final = embed_metadata(content, metadata)
    # The bytes written must answer exactly as the bytes checked (the rewrite touches only
    # the metadata).
    first = LiteRTModel(model_content=final)(check_pixels[:1])
    if any(not np.array_equal(first[k], converted[k][:1]) for k in converted):
        raise ExportError("embedding the metadata changed the model's answers; nothing written")
    _write_atomically(output, final, metadata)
    _log().info("wrote %s (%d bytes, %s): %s", output, len(final), quantization, figures)
    return metadata


def sidecar_path(output):
    return f"{output}{SIDECAR_SUFFIX}"


def _write_atomically(output, content, metadata):
    """`output` and its JSON sidecar, each through a temp file renamed into place."""
    parent = os.path.dirname(str(output))
    if parent:
        tf.io.gfile.makedirs(parent)
    sidecar = dict(metadata, model_file=os.path.basename(str(output)),
                   model_bytes=len(content), model_sha256=hashlib.sha256(content).hexdigest())
    write_atomically([(sidecar_path(output),
                       json.dumps(sidecar, indent=1, sort_keys=True).encode()),
                      (str(output), content)])


def write_atomically(pairs):
    """Each (path, bytes) of `pairs` through a temp file; the renames happen only after every
    temp file is written, in the given order (a failure while writing them leaves every
    target as it was)."""
    temps = []
    try:
        for path, data in pairs:
            tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            temps.append(tmp)
            with tf.io.gfile.GFile(tmp, "wb") as f:
                f.write(data)
        for (path, _), tmp in zip(pairs, temps):
            tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        for tmp in temps:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)


# The check's thresholds a user may override: flag -> (Tolerance field, its unit).
_THRESHOLD_FLAGS = {"max_mean_age_difference": ("mean_age", "years"),
                    "max_age_difference": ("max_age", "years, one image"),
                    "min_gender_agreement": ("gender_agreement", "share of images")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", "--job_dir", dest="job_dir", required=True,
                        help="the trained model: a trainer job dir (model.keras + "
                             "model_spec.json)")
    parser.add_argument("--output", required=True, help="the .tflite file to write (its "
                        "metadata also goes to <output>.json)")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default=DEFAULT_QUANTIZATION,
                        help="default %(default)s")
    parser.add_argument("--records_dir", default=None,
                        help="records (pipeline.build_records): int8 calibrates on its train "
                             "split; the check runs on its validation split")
    parser.add_argument("--representative_images", type=int,
                        default=DEFAULT_REPRESENTATIVE_IMAGES,
                        help="train images calibrating int8 (default %(default)s)")
    parser.add_argument("--check_images", type=int, default=DEFAULT_CHECK_IMAGES,
                        help="validation images the converted model is checked on "
                             "(default %(default)s)")
    parser.add_argument("--int8_float_layers", type=int, default=DEFAULT_INT8_FLOAT_LAYERS,
                        help="int8: keep this many layers in float, those whose int8 error "
                             "on the representative images is largest (default %(default)s)")
    for flag, (_, unit) in _THRESHOLD_FLAGS.items():
        parser.add_argument(f"--{flag}", type=float, default=None,
                            help=f"override the mode's check threshold ({unit})")
    console.add_verbose_flag(parser)
    argv = sys.argv[1:] if argv is None else argv
    arg_types.warn_renamed(argv, {"--job_dir": "--model"})
    args = parser.parse_args(argv)
    tolerance = None
    overrides = {field: getattr(args, flag) for flag, (field, _) in _THRESHOLD_FLAGS.items()}
    if any(v is not None for v in overrides.values()):
        tolerance = dataclasses.replace(TOLERANCES[args.quantization],
                                        **{k: v for k, v in overrides.items() if v is not None})
    try:
        metadata = export_litert(args.job_dir, args.output, args.quantization,
                                 records_dir=args.records_dir,
                                 representative_images=args.representative_images,
                                 check_images=args.check_images, tolerance=tolerance,
                                 int8_float_layers=args.int8_float_layers)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    check = metadata["check"]
    print(f"exported {args.output} ({args.quantization}); metadata in {sidecar_path(args.output)}")
    print(f"check on {check['images']} {check['source']}: mean |age difference| "
          f"{check['mean_abs_age_difference']:.4f} years, max "
          f"{check['max_abs_age_difference']:.4f}"
          + (f", gender agreement {check['gender_agreement']:.1%}"
             if "gender_agreement" in check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
