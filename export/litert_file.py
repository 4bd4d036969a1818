"""Trained Keras model -> one checked, self-describing LiteRT file (`export_litert`): the
order of the steps and what is refused before anything is written.

The steps are owned elsewhere: the images (`export.litert_images`), the conversion
(`export.litert_convert`), the runtime (`export.litert_model`), the check
(`export.litert_check`), the metadata and sidecar (`export.litert_metadata`) and the writes
(`agegender.atomic_files`). The command line is `export.export_litert`.
"""
import dataclasses
import logging
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from agegender import atomic_files, heads
from export import litert_check, litert_convert, litert_images, litert_metadata
from export.errors import ExportError
from export.export_model import model_to_export
from export.litert_model import LiteRTModel

DEFAULT_QUANTIZATION = "float16"  # half the size, the same answers (docs/litert.md)
DEFAULT_REPRESENTATIVE_IMAGES = 200
DEFAULT_CHECK_IMAGES = 200


def _log():
    return logging.getLogger(__name__)


def export_litert(job_dir=None, output=None, quantization=DEFAULT_QUANTIZATION, *, records_dir=None,
                  representative_images=DEFAULT_REPRESENTATIVE_IMAGES,
                  check_images=DEFAULT_CHECK_IMAGES, tolerance=None,
                  int8_float_layers=litert_convert.DEFAULT_INT8_FLOAT_LAYERS, model=None,
                  spec=None):
    """Converts, checks and writes `output` (+ `output`.json); returns the metadata.

    Pass `job_dir` or an in-memory `model` and `spec`. `tolerance`: a `Tolerance` instead of
    `TOLERANCES[quantization]`. `int8_float_layers`: in int8, this many layers with the
    largest int8 error stay float (`convert`). Raises `ExportError` (and writes nothing)
    when the model cannot be converted or the converted model fails the check.
    """
    quantizations = litert_convert.QUANTIZATIONS
    if quantization not in quantizations:
        raise ExportError(f"quantization must be one of {quantizations}, got {quantization!r}")
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
    tolerance = tolerance or litert_check.TOLERANCES[quantization]

    # Held-out images for the check first: a records problem shows before the slow part.
    if records_dir:
        check_pixels = litert_images.records_pixels(records_dir, "validation", spec,
                                                    check_images)
        check_source = f"validation split of {records_dir}"
    else:
        check_pixels = litert_images.synthetic_pixels(spec, check_images)
        check_source = "synthetic images (no --records_dir)"
    representative, representative_info = None, None
    if quantization == "int8":
        representative = litert_images.records_pixels(records_dir, "train", spec,
                                                      representative_images)
        representative_info = {"images": int(len(representative)),
                               "source": f"train split of {records_dir}"}

    work = tempfile.mkdtemp(prefix="export_litert-")
    try:
        litert_convert.write_saved_model(model, spec, work)
        content, float_layers = litert_convert.convert(work, quantization, representative,
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
    figures, problems = litert_check.compare(litert_check.keras_outputs(model, check_pixels),
                                             converted, spec, tolerance)
    figures.update(source=check_source, tolerance=dataclasses.asdict(tolerance))
    if problems:
        hint = (" More --int8_float_layers or --representative_images may help; float16 keeps "
                "the answers at half the size." if quantization == "int8" else "")
        raise ExportError(f"the {quantization} model does not answer like the Keras model on "
                          f"{len(check_pixels)} {check_source}: " + "; ".join(problems)
                          + f". Nothing was written to {output}.{hint}")

    metadata = litert_metadata.build_metadata(spec, quantization, lite.io_details(), figures,
                                              representative_info, job_dir)
    if quantization == "int8":
        metadata["int8"] = litert_metadata.int8_section(
            litert_convert.int8_input_quantization(content),  # None: the first layer is float
            litert_convert.INT8_FLOAT_OPS, float_layers)
    final = litert_metadata.embed_metadata(content, metadata)
    # The bytes written must answer exactly as the bytes checked (the rewrite touches only
    # the metadata).
    first = LiteRTModel(model_content=final)(check_pixels[:1])
    if any(not np.array_equal(first[k], converted[k][:1]) for k in converted):
        raise ExportError("embedding the metadata changed the model's answers; nothing written")
    parent = os.path.dirname(str(output))
    if parent:
        tf.io.gfile.makedirs(parent)
    atomic_files.write_atomically([
        (litert_metadata.sidecar_path(output), litert_metadata.sidecar(output, final, metadata)),
        (str(output), final)])
    _log().info("wrote %s (%d bytes, %s): %s", output, len(final), quantization, figures)
    return metadata
