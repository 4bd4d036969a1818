"""Trained Keras model (job dir) -> one LiteRT (TFLite) file for phones and edge boxes,
quantized, checked against the Keras model before it is written, and self-describing.

The command line of `export.litert_file.export_litert`. The conversion and its modes are
`export.litert_convert`'s, the check that refuses a converted model that does not answer
like the Keras model `export.litert_check`'s, and the metadata the file carries
`export.litert_metadata`'s (`read_metadata`; the same JSON is written beside it as
`<output>.json`).

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
            (`litert_convert.INT8_FLOAT_OPS`: int8's probability steps of 1/256 moved the
            age read from 101 bins by years) and the --int8_float_layers layers (default 3)
            whose int8 error on those images is largest (TensorFlow's quantization debugger
            measures it), which stay float; their names are in the metadata. Any other op
            without an int8 kernel is refused rather than left in float. The input and
            outputs stay float32, as in every mode (a QUANTIZE op at the input, float
            softmax outputs), so the same app code calls every file; the input's scale and
            zero point are in the metadata for an app that wants to feed int8 itself.

The check: the converted model and the Keras model run on --check_images images of the
VALIDATION split (never test; synthetic images when there is no --records_dir) through
`agegender.preprocessing.model_input`, the evaluation's function; ages, their spread and the
gender answers are compared with per-mode thresholds (`litert_check.TOLERANCES`). NaN or
infinite outputs, ages that collapsed to (nearly) one value or drifted too far, an op LiteRT
has no kernel for, or a missing job dir: an `ExportError` saying so, and no file is written.
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
import dataclasses
import sys

from agegender import arg_types, console
from export.errors import ExportError
from export.litert_check import TOLERANCES
from export.litert_convert import DEFAULT_INT8_FLOAT_LAYERS, QUANTIZATIONS
from export.litert_file import (DEFAULT_CHECK_IMAGES, DEFAULT_QUANTIZATION,
                                DEFAULT_REPRESENTATIVE_IMAGES, export_litert)
from export.litert_metadata import read_metadata, sidecar_path

# `export_litert` and `read_metadata` keep their old path for users' scripts.
__all__ = ["export_litert", "read_metadata", "main"]


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
