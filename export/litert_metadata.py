"""The LiteRT age file's interface names and its metadata: the JSON a developer calling the
file needs, embedded in the flatbuffer's metadata map and written beside it as a sidecar.

Owns the metadata format (`METADATA_FORMAT`): what it holds (`build_metadata`,
`int8_section`), where it lives in the file (`embed_metadata`, `read_metadata`: entry
`METADATA_NAME`; C++ reads it with `FlatBufferModel::ReadAllMetadata()`) and the sidecar
(`sidecar`, `sidecar_path`). Readers (`analyzer.backends.litert`, the evaluation through it)
get the model's spec back with `spec_from_metadata`.

TF-free at import: the flatbuffer is read with `ai_edge_litert`'s schema, and TensorFlow is
imported only to record its version when the metadata is built.
"""
import dataclasses
import datetime
import hashlib
import json
import os

import numpy as np

from agegender import heads, schema
from agegender import serving_contract as contract
from export.errors import ExportError

SIGNATURE = contract.SERVING_DEFAULT
INPUT = "pixels"
METADATA_NAME = "agegender"  # the flatbuffer's metadata entry holding the JSON
METADATA_FORMAT = "agegender-litert/1"
SIDECAR_SUFFIX = ".json"

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
    import tensorflow as tf

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


def int8_section(input_quantization, float_ops, float_layers):
    """The metadata's `int8` entry: the input's (scale, zero point) or None (the first layer
    is float), the op types and the layers left in float."""
    return {
        "input_quantization": input_quantization and dict(zip(("scale", "zero_point"),
                                                              input_quantization)),
        "float_ops": list(float_ops),
        "float_layers": float_layers,
        "note": "every other op computes in int8. The signature's input and outputs are "
                "float32 as in every mode: the file quantizes the pixels itself "
                "(q = round(x / scale) + zero_point) and the softmax outputs are float"}


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
                      if as_text(m.name) != METADATA_NAME] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def as_text(value):
    """A flatbuffer string (bytes or str) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_metadata(model_content):
    """The METADATA_NAME JSON of a LiteRT flatbuffer (bytes), or None when it has none."""
    from ai_edge_litert import schema_py_generated as schema_fb

    content = bytes(model_content)
    try:
        model = schema_fb.Model.GetRootAs(content, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if as_text(entry.Name()) != METADATA_NAME:
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


def sidecar_path(output):
    return f"{output}{SIDECAR_SUFFIX}"


def sidecar(output, content, metadata):
    """The sidecar's bytes: the metadata plus the file's name, size and SHA-256."""
    data = dict(metadata, model_file=os.path.basename(str(output)),
                model_bytes=len(content), model_sha256=hashlib.sha256(content).hexdigest())
    return json.dumps(data, indent=1, sort_keys=True).encode()
