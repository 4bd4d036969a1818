"""The face detector's three networks (MTCNN, `faces.networks`) -> LiteRT files, checked against
the TensorFlow networks before they are written, with what an app needs to run
detect -> align -> age on a phone with the age model of `export.export_litert`.

Owns the networks' LiteRT signatures, the check that refuses a converted network that does
not answer like the TensorFlow one, and the faces metadata (the cascade's parameters and
rules, the alignment template). The conversion itself (`export.litert_convert`), the
metadata embedding (`export.litert_metadata`) and the atomic writes (`agegender.atomic_files`)
are the age model's.

Files written to --output_dir (all or none):

  pnet.tflite   `normalized` float32 [1, H, W, 3], H and W dynamic (resize the input tensor
                to each pyramid level's size; both >= 12) -> `probability` [1, h, w],
                `offsets` [1, h, w, 4], h = ceil((H - 2) / 2) - 4 (one cell per 12x12
                window, 2 pixels apart).
  rnet.tflite   `normalized` [N, 24, 24, 3], N dynamic (>= 1) -> `probability` [N],
                `offsets` [N, 4].
  onet.tflite   `normalized` [N, 48, 48, 3] -> `probability` [N], `offsets` [N, 4],
                `landmarks` [N, 10] (x of the 5 points, then their y, fractions of the patch).
  faces.json    the metadata (each .tflite also carries it in its metadata map, entry
                `litert_metadata.METADATA_NAME`, with `network` naming the file).

Inputs are normalised OUTSIDE the networks, as `faces.detector` feeds them: (x - 127.5) / 128
of RGB pixels 0..255 (`faces.networks.normalize`). N must be >= 1: the TensorFlow networks'
guard for an empty batch (`tf.cond`) is left out of the files; an app skips the call.

Quantization (--quantization): none (default: the three files are ~2 MB together and the
cascade compares probabilities with thresholds, so float32 keeps its decisions those of the
TensorFlow detector) or float16 (half the size; figures in docs/litert.md).

Usage:
  python -m export.export_litert_faces --output_dir=models/faces_litert [--quantization=none|float16]
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

from agegender import atomic_files, console
from export import litert_convert, litert_metadata
from export.errors import ExportError
from faces import boxes as box_ops
from faces import detector as detector_lib
from faces import networks
from faces import photo

INPUT = "normalized"
PROBABILITY, OFFSETS, LANDMARKS = "probability", "offsets", "landmarks"
QUANTIZATIONS = ("none", "float16")
DEFAULT_QUANTIZATION = "none"
METADATA_FILE = "faces.json"
METADATA_FORMAT = "agegender-litert-faces/1"
FILES = {name: f"{name}.tflite" for name in (networks.PNET, networks.RNET, networks.ONET)}

# Largest |difference| from the TensorFlow network allowed on any output value of the check
# inputs (probabilities, offsets and landmarks are all fractions of order 1). float32 differs
# by summation order only; float16 by the rounding of its weights. About five times the
# largest difference measured (docs/litert.md); a broken conversion is off by tenths.
TOLERANCES = {"none": 5e-6, "float16": 2e-2}

# The check's inputs: PNet sizes (height, width), including PNet's smallest (one cell) and
# odd sizes whose pooling pads; RNet/ONet batch sizes, including 1.
CHECK_PNET_SIZES = ((12, 12), (37, 53), (120, 90))
CHECK_BATCHES = (1, 7)


def _network_spec(name):
    """(the TF network's class, its input shape with None for dynamic dims, output names)."""
    if name == networks.PNET:
        return networks.PNet, [1, None, None, 3], (PROBABILITY, OFFSETS)
    if name == networks.RNET:
        size = networks.RNET_SIZE
        return networks.RNet, [None, size, size, 3], (PROBABILITY, OFFSETS)
    size = networks.ONET_SIZE
    return networks.ONet, [None, size, size, 3], (PROBABILITY, OFFSETS, LANDMARKS)


def _forward(network):
    """The network's computation without RNet/ONet's empty-batch `tf.cond` (which would
    become control flow in the file for a case the app never calls)."""
    return network if isinstance(network, networks.PNet) else network._run


def _write_saved_model(name, network, directory):
    _, shape, outputs = _network_spec(name)
    forward = _forward(network)
    fn = tf.function(lambda x: dict(zip(outputs, forward(x))),
                     input_signature=[tf.TensorSpec(shape, tf.float32, name=INPUT)],
                     autograph=False)
    tf.saved_model.save(network, directory,
                        signatures={litert_metadata.SIGNATURE: fn.get_concrete_function()})


def check_inputs(name, seed=0):
    """Deterministic normalised inputs for one network: uniform noise in the networks'
    input range [-1, 1] and smooth gradients (image-like), per shape of the check."""
    rng = np.random.default_rng(seed)
    _, shape, _ = _network_spec(name)
    if name == networks.PNET:
        shapes = [(1, h, w, 3) for h, w in CHECK_PNET_SIZES]
    else:
        shapes = [(n, *shape[1:]) for n in CHECK_BATCHES]
    inputs = []
    for s in shapes:
        inputs.append(rng.uniform(-1, 1, s).astype(np.float32))
        ramp = np.linspace(-1, 1, s[1] * s[2] * 3).reshape(1, s[1], s[2], 3)
        inputs.append(np.clip(ramp * rng.uniform(0.5, 1.0, (s[0], 1, 1, 3))
                              + rng.normal(0, 0.05, s), -1, 1).astype(np.float32))
    return inputs


class LiteRTNetwork:
    """A network's LiteRT file on `ai_edge_litert`: normalized [N, H, W, 3] -> {output: array}
    (the signature runner resizes the dynamic input dims to each call's shape)."""

    def __init__(self, model_content):
        from ai_edge_litert.interpreter import Interpreter

        self.content = bytes(model_content)
        self.interpreter = Interpreter(model_content=self.content)
        signatures = self.interpreter.get_signature_list()
        if litert_metadata.SIGNATURE not in signatures:
            raise ExportError(f"no {litert_metadata.SIGNATURE!r} signature (it has "
                              f"{sorted(signatures)})")
        self.runner = self.interpreter.get_signature_runner(litert_metadata.SIGNATURE)
        self.output_names = sorted(self.runner.get_output_details())

    def __call__(self, x):
        return {k: np.asarray(v) for k, v in
                self.runner(**{INPUT: np.asarray(x, np.float32)}).items()}

    def io_details(self):
        """Name -> dtype and shape signature (-1: dynamic) of the input and each output."""
        details = {INPUT: self.runner.get_input_details()[INPUT],
                   **self.runner.get_output_details()}
        return {name: {"dtype": np.dtype(d["dtype"]).name,
                       "shape": [int(x) for x in d["shape_signature"]]}
                for name, d in details.items()}


def compare(name, network, lite, inputs, tolerance):
    """(figures, problems) of the converted network against the TF one on `inputs`."""
    _, _, outputs = _network_spec(name)
    forward = _forward(network)
    worst = {k: 0.0 for k in outputs}
    problems = []
    for x in inputs:
        reference = dict(zip(outputs, (np.asarray(t) for t in forward(tf.constant(x)))))
        converted = lite(x)
        for k in outputs:
            if converted[k].shape != reference[k].shape:
                problems.append(f"{name} {k}: shape {converted[k].shape} for input {x.shape}, "
                                f"TensorFlow gives {reference[k].shape}")
                continue
            if not np.all(np.isfinite(converted[k])):
                problems.append(f"{name} {k}: NaN or infinite values for input {x.shape}")
                continue
            worst[k] = max(worst[k], float(np.max(np.abs(converted[k] - reference[k]))))
    for k, diff in worst.items():
        if diff > tolerance:
            problems.append(f"{name} {k} differs from the TensorFlow network's by {diff:.3g} "
                            f"(at most {tolerance:g} allowed)")
    figures = {"inputs": [list(x.shape) for x in inputs], "max_abs_difference": worst,
               "tolerance": tolerance}
    return figures, problems


# -- metadata ------------------------------------------------------------------------------
def cascade_rules():
    """How the app runs the cascade (`faces.detector`'s arithmetic), in words; the numbers
    are the `parameters` of the metadata (`DetectorConfig` field names)."""
    cell, stride = networks.PNET_CELL, networks.PNET_STRIDE
    return {
        "coordinates": "boxes are (x1, y1, x2, y2) in pixel-index coordinates of the image "
                       "(pixel (i, j) is x=j, y=i); area = (x2 - x1) * (y2 - y1), no +1",
        "detection_image": "if the longer side exceeds max_side, area-downscale the photo so "
                           "that it is max_side (sides rounded) and map the results back: "
                           "p_photo = (p + 0.5) / scale - 0.5; clip boxes to [0, W-1] x [0, H-1]",
        "normalisation": "every network input is (x - 127.5) / 128 of RGB 0..255, "
                         "computed outside the networks",
        "pyramid": f"levels k = 0.. count-1 with count = round(log(min(H, W) / {cell}) / "
                   f"log(1 / scale_factor) - 1); scale_k = ({cell} / min_face_size) * "
                   f"scale_factor^k; level size floor(H * scale_k) x floor(W * scale_k) "
                   f"(area resize), skipped when its shorter side is under {cell}",
        "pnet_decoding": f"cell (row i, column j) with probability > pnet_threshold (at most "
                         f"max_level_candidates per level, highest first) is the window "
                         f"x1 = {stride}j + 1, y1 = {stride}i + 1, x2 = {stride}j + {cell}, "
                         f"y2 = {stride}i + {cell}; box = (window + offsets * {cell - 1}) / "
                         f"scale_k. Suppress per level (IoU nms_level), then all levels together "
                         f"(the max_rnet_inputs highest, IoU nms_pyramid), then square",
        "suppression": "sort by score, highest first (ties: the later candidate first); drop "
                       "a box when ANY higher-scored box overlaps it by more than the threshold "
                       "(whether or not that box was itself dropped: not greedy NMS)",
        "square": "grow each box to a square of side max(w, h) about the same centre "
                  "(w = x2 - x1, h = y2 - y1)",
        "patches": f"crop each box with bilinear crop-and-resize (tf.image.crop_and_resize) of "
                   f"the normalised detection image to {networks.RNET_SIZE}x{networks.RNET_SIZE} "
                   f"(RNet) or {networks.ONET_SIZE}x{networks.ONET_SIZE} (ONet), the box given "
                   f"as (y1 / H, x1 / W, y2 / H, x2 / W) (divided by H and W, not H - 1); "
                   f"samples outside the image are 0 (mid grey)",
        "calibration": "box += offsets * (w, h, w, h) with w = x2 - x1 + 1, h = y2 - y1 + 1",
        "rnet": "keep probability > rnet_threshold, calibrate, suppress (IoU nms_rnet), "
                "square, keep the max_onet_inputs highest",
        "onet": "landmarks on the box ONet saw (before calibration): x_i = w * landmarks[i] "
                "+ x1 - 1, y_i = h * landmarks[5 + i] + y1 - 1 (w, h with +1 as in "
                "calibration); keep probability > onet_threshold, calibrate, suppress with "
                "the intersection over the SMALLER box (nms_onet); at most max_faces faces, "
                "highest score first",
        "overlap": f"IoU is intersection / union ({box_ops.UNION}); nms_onet uses "
                   f"intersection / min(area) ({box_ops.MIN})",
    }


def alignment_rules():
    return ("Per face, fit the least-squares similarity (rotation, uniform scale, "
            "translation; Umeyama's closed form) mapping the template's points scaled to the "
            "crop, template * S - 0.5 (pixel-index coordinates of an S x S crop), onto the "
            "face's 5 landmarks in the photo; sample the crop through it, bilinear, outside "
            "the photo = 0 (black). When the face is larger in the photo than the crop, "
            "area-downscale its footprint first (antialiasing). S is the age model's input "
            "size (its metadata's input.size): the template is normalised, so any S frames "
            "the face alike; feed the crop's float values 0..255 to the age model as they are.")


def build_metadata(quantization, networks_info):
    import ai_edge_litert

    described = photo.describe()
    return {
        "format": METADATA_FORMAT,
        "signature": litert_metadata.SIGNATURE,
        "quantization": quantization,
        "files": dict(FILES),
        "input": {"name": INPUT, "layout": "NHWC", "channels": "RGB",
                  "normalisation": "OUTSIDE the networks: feed (x - 127.5) / 128 of RGB pixels "
                                   "0..255 (faces.networks.normalize)",
                  "range": [-127.5 / 128, 127.5 / 128]},
        "networks": networks_info,
        "cascade": {
            "parameters": described["detector"],
            "pnet_cell": networks.PNET_CELL, "pnet_stride": networks.PNET_STRIDE,
            "rnet_size": networks.RNET_SIZE, "onet_size": networks.ONET_SIZE,
            "landmarks": list(detector_lib.LANDMARK_NAMES),
            "landmark_note": "\"left\" is the image's left (smaller x): the person's right eye",
            "rules": cascade_rules(),
        },
        "alignment": {
            "template": described["template"],
            "template_sha256": described["template_sha256"],
            "template_coordinates": "normalised crop coordinates, a pixel's centre at "
                                    "(index + 0.5) / S, in the landmarks' order",
            "select": described["select"],
            "select_rule": "one face per photo: the largest box (\"largest\") or the highest "
                           "score (\"score\")",
            "rules": alignment_rules(),
        },
        "source": {"weights": "PyPI mtcnn 1.0.0 (faces.networks)",
                   "tensorflow": tf.__version__,
                   "checked_with": f"ai-edge-litert "
                                   f"{getattr(ai_edge_litert, '__version__', '')}".strip(),
                   "exported_at": datetime.datetime.now(datetime.timezone.utc)
                   .isoformat(timespec="seconds")},
    }


# -- the export ----------------------------------------------------------------------------
def convert_network(name, network, quantization, tolerance):
    """(flatbuffer bytes, check figures, io details) of one network; ExportError when it
    cannot be converted or does not answer like the TF network."""
    work = tempfile.mkdtemp(prefix=f"export_litert_faces-{name}-")
    try:
        _write_saved_model(name, network, work)
        content, _ = litert_convert.convert(work, quantization)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        lite = LiteRTNetwork(content)
        figures, problems = compare(name, network, lite, check_inputs(name), tolerance)
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"{name} ({quantization}) does not run on the LiteRT runtime "
                          f"({e})") from None
    if problems:
        raise ExportError(f"{name} ({quantization}) does not answer like the TensorFlow "
                          f"network: " + "; ".join(problems))
    return content, figures, lite.io_details()


def export_faces(output_dir, quantization=DEFAULT_QUANTIZATION, *, tolerance=None,
                 weights=None):
    """Converts and checks the three networks, then writes them and faces.json into
    `output_dir`; returns the metadata. `tolerance`: instead of TOLERANCES[quantization];
    `weights`: {name: weight list} (default: the installed mtcnn package's). Raises
    ExportError, and writes nothing, when a network fails."""
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if not output_dir:
        raise ExportError("--output_dir is required")
    tolerance = TOLERANCES[quantization] if tolerance is None else tolerance
    weights = weights or {}
    contents, info = {}, {}
    for name, file_name in FILES.items():
        cls, _, _ = _network_spec(name)
        try:
            network = cls(weights.get(name))
        except networks.WeightsError as e:
            raise ExportError(str(e)) from None
        content, figures, io = convert_network(name, network, quantization, tolerance)
        contents[name] = content
        info[name] = {"file": file_name, "io": io, "check": figures}
    metadata = build_metadata(quantization, info)

    pairs = []
    for name, file_name in FILES.items():
        final = litert_metadata.embed_metadata(contents[name], dict(metadata, network=name))
        # The bytes written answer exactly as the bytes checked (only the metadata changed).
        x = check_inputs(name)[0]
        before, after = LiteRTNetwork(contents[name])(x), LiteRTNetwork(final)(x)
        if any(not np.array_equal(before[k], after[k]) for k in before):
            raise ExportError(f"embedding the metadata changed {name}'s answers; nothing written")
        pairs.append((os.path.join(str(output_dir), file_name), final))
    for (_, final), name in zip(pairs, FILES):  # faces.json only: a file cannot hold its hash
        info[name].update(bytes=len(final), sha256=hashlib.sha256(final).hexdigest())
    # faces.json last: a reader that finds it finds the files it describes.
    pairs.append((os.path.join(str(output_dir), METADATA_FILE),
                  json.dumps(metadata, indent=1, sort_keys=True).encode()))
    tf.io.gfile.makedirs(str(output_dir))
    atomic_files.write_atomically(pairs)
    return metadata


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--output_dir", required=True,
                        help="directory for pnet/rnet/onet.tflite and faces.json")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default=DEFAULT_QUANTIZATION,
                        help="default %(default)s")
    parser.add_argument("--max_difference", type=float, default=None,
                        help="override the mode's check threshold (largest |difference| of "
                             "an output value from the TensorFlow network's)")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        metadata = export_faces(args.output_dir, args.quantization,
                                tolerance=args.max_difference)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, info in metadata["networks"].items():
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in info["check"]["max_abs_difference"].items())
        print(f"{os.path.join(args.output_dir, info['file'])}: {info['bytes']} bytes; max "
              f"|difference| from TensorFlow: {diffs}")
    print(f"metadata in {os.path.join(args.output_dir, METADATA_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
