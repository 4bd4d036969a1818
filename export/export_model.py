"""Trained Keras model (job dir) -> a versioned SavedModel that TF Serving loads as is.

Owns: loading the trainer's `model.keras` + `model_spec.json`, the TF Serving directory
layout (`<export_base>/<version>/saved_model.pb`, `variables/`,
`assets.extra/tf_serving_warmup_requests`), version numbering and the command line. The
signatures' functions are `export.serving_module`'s, the warmup file `export.warmup`'s.

Signatures (all reach the model through `agegender.preprocessing`, the function the trainer
uses, so there is no train/serve skew):

- `serving_default`: `image_bytes` string [N] (JPEG/PNG/GIF/BMP/WebP bytes) and an optional `key`
  string [N] (echoed back). `key` is optional through the SignatureDef `defaults` map
  (TF Serving fills an input missing from a request from it); the default is an empty
  vector, which the graph turns into N empty keys.
- `predict_images`: `images` float32 [N, H, W, 3], pixels in 0..255 (resized and
  centre-cropped like an image when H, W differ from the model's size).
- `serve_tf_examples`: `examples` string [N], serialized `tf.train.Example` records with
  `agegender.schema.FEATURE_SPEC` (TFX style), so batch scoring runs over the TFRecords.
- `predict_photo`: `image_bytes` string [N] of whole photos (any framing and size) and an
  optional `key`: faces are detected and aligned in the graph (`faces`, TF ops only:
  MTCNN weights are variables of the SavedModel) and each answered like a `serving_default`
  crop, up to `max_faces` per photo as dense padded tensors (`faces.photo_predictor`,
  names in `agegender.serving_contract`). The faces are aligned on the template of the
  model's training data (`ModelSpec.face_alignment`, else the shipped one), baked into the
  graph as constants and written beside it to `assets.extra/face_alignment.json`.

Encoded images whose header declares more than `max_image_pixels` pixels are refused
before decoding (INVALID_ARGUMENT "image too large", `agegender.image_header`), so a
decompression bomb cannot exhaust the server's memory, on the real TF Serving too.

Outputs: `age` float [N] (years) always; `age_distribution` [N, 101] (classification),
`age_range` [N, 21] (range mode); `gender` string "M"/"F" and `gender_probability`
[N, 2] when the model has a gender head; `key` (serving_default, predict_photo).
predict_photo: `num_faces` int32 [N], `boxes` [N, F, 4], `landmarks` [N, F, 5, 2],
`face_scores` [N, F], and every output above per face ([N, F, ...]; padding rows zeros and
empty strings), F = max_faces.

Usage:
  python -m export.export_model --model=runs/exp1 --output_dir=models/age [--version=N] \
      [--max_faces=16] [--min_face_size=20] [--no_photo_signature]
From the trainer: `export.export_model.export_saved_model(job_dir, export_base)`.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import dataclasses
import json
import logging
import os
import socket
import sys
import time
import uuid

import tensorflow as tf

from agegender import arg_types, console, image_header, model_layout
from agegender import job_dir as job_dir_lib
from agegender import serving_contract as contract
from export.errors import ExportError
from export.serving_module import ServingModule
from export.warmup import synthetic_jpeg, warmup_requests, write_warmup
from faces import photo_predictor


def load_trained_model(job_dir):
    """(Keras model, ModelSpec) from a trainer job dir; ExportError when it is not one."""
    try:
        return job_dir_lib.load(job_dir)
    except job_dir_lib.JobDirError as e:
        raise ExportError(str(e)) from None


def model_to_export(job_dir, model=None, spec=None):
    """(model, spec): the in-memory pair when given, else loaded from `job_dir`."""
    if model is None:
        if job_dir is None:
            raise ExportError("give a job_dir or a model and its spec")
        return load_trained_model(job_dir)
    if spec is None:
        raise ExportError("an in-memory model needs its ModelSpec")
    return model, spec


def write_face_alignment(saved_model_dir, info):
    """assets.extra/face_alignment.json: how predict_photo finds and aligns faces."""
    tf.io.gfile.makedirs(model_layout.join(saved_model_dir, model_layout.WARMUP_DIR))
    path = model_layout.join(saved_model_dir, model_layout.FACE_ALIGNMENT_PATH)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(info, indent=1))
    return path


def read_face_alignment(saved_model_dir):
    """The exported face_alignment.json as a dict, None for a model without predict_photo."""
    path = model_layout.join(saved_model_dir, model_layout.FACE_ALIGNMENT_PATH)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def export_saved_model(job_dir=None, export_base=None, version=None, *, model=None, spec=None,
                       model_name=contract.DEFAULT_MODEL_NAME, warmup_images=None,
                       max_image_pixels=image_header.DEFAULT_MAX_PIXELS,
                       photo_signature=True, max_faces=contract.DEFAULT_MAX_FACES,
                       min_face_size=photo_predictor.DEFAULT_MIN_FACE_SIZE):
    """Exports a SavedModel version; returns its directory.

    Pass `job_dir` (reads model.keras + model_spec.json) or an in-memory `model` and `spec`
    (the trainer at the end of a run). `version` defaults to newest existing + 1 (else 1);
    an existing version is never overwritten. The version is written to a hidden temp dir
    beside it and renamed into place, so TF Serving never sees a half-written version.
    `warmup_images`: encoded images for the warmup file (default: synthetic JPEGs).
    `max_image_pixels`: the signatures refuse encoded images declaring more (0: no limit).
    `photo_signature`: add predict_photo (faces found in whole photos), returning up to
    `max_faces` faces per photo of at least `min_face_size` pixels.
    Hidden temp dirs left by an export that was killed are removed first.
    """
    if export_base is None:
        raise ExportError("export_base is required")
    model, spec = model_to_export(job_dir, model, spec)
    tf.io.gfile.makedirs(export_base)
    if version is None:
        # Every numeric directory counts, servable or not: a version is never overwritten.
        version = (model_layout.versions(export_base, servable_only=False) or [0])[-1] + 1
    version = int(version)
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    final_dir = model_layout.version_dir(export_base, version)
    if tf.io.gfile.exists(final_dir):
        raise ExportError(f"version {version} already exists at {final_dir}; versions are never "
                          f"overwritten (omit --version to use the next free one)")

    if photo_signature and (int(max_faces) < 1 or float(min_face_size) < 12):
        raise ExportError(f"max_faces {max_faces} must be >= 1 and min_face_size "
                          f"{min_face_size} >= 12 (the detector's smallest window)")
    remove_stale_temp_dirs(export_base)
    photo = (dict(max_faces=int(max_faces), min_face_size=float(min_face_size))
             if photo_signature else None)
    module = ServingModule(model, spec, max_image_pixels, photo)
    tmp_dir = model_layout.join(export_base, _temp_name(version))
    tf.io.gfile.makedirs(tmp_dir)
    if os.path.isdir(tmp_dir):
        os.chmod(tmp_dir, 0o755)  # a server may run as another user
    try:
        tf.saved_model.save(module, tmp_dir, signatures=module.signatures())
        images = warmup_images or [synthetic_jpeg(seed=i) for i in range(2)]
        write_warmup(tmp_dir, warmup_requests(model_name, images, spec.img_dim,
                                              photo=photo_signature))
        if module.photo is not None:
            write_face_alignment(tmp_dir, module.photo.describe())
        if tf.io.gfile.exists(final_dir):  # someone else took this version meanwhile
            raise ExportError(f"version {version} appeared at {final_dir} during the export")
        # Atomic on a local filesystem; on object stores (gs://) a rename copies object by
        # object, so TF Serving may briefly see a partial version there (docs/serving.md).
        tf.io.gfile.rename(tmp_dir, final_dir)
    except BaseException:
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
        raise
    return final_dir


# Temp dirs are named .tmp-<version>-<host>-<pid>-<random>: an export whose process is gone
# left its dir behind (kill -9, power loss); TF Serving and `model_layout` never read them.
_TEMP_PREFIX = ".tmp-"


def _temp_name(version):
    return f"{_TEMP_PREFIX}{version}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_dirs(export_base, legacy_age_seconds=24 * 3600):
    """Removes the temp dirs of exports on this host whose process is gone; returns them.

    Temp dirs of older releases (no host and pid in the name) go once a day old; a live
    export's dir (its pid still running) and other hosts' dirs are never touched.
    """
    removed = []
    host = socket.gethostname()
    for name in tf.io.gfile.listdir(export_base):
        name = name.rstrip("/")
        path = model_layout.join(export_base, name)
        if not name.startswith(_TEMP_PREFIX) or not tf.io.gfile.isdir(path):
            continue
        parts = name[len(_TEMP_PREFIX):].split("-")
        pid = parts[-2] if len(parts) >= 4 else None
        if pid is not None and pid.isdigit() and "-".join(parts[1:-2]) == host:
            stale = not _pid_alive(int(pid))
        elif pid is None:
            try:
                age = time.time() - tf.io.gfile.stat(path).mtime_nsec / 1e9
            except tf.errors.OpError:  # object stores have no directory times
                age = 0
            stale = age > legacy_age_seconds
        else:
            stale = False
        if stale:
            tf.io.gfile.rmtree(path)
            removed.append(path)
    if removed:
        logging.getLogger(__name__).info("removed %d stale export temp dir(s): %s",
                                         len(removed), removed)
    return removed


# Old spellings still accepted (with a warning): one spelling per concept across commands.
RENAMED_FLAGS = {"--job_dir": "--model", "--export_base": "--output_dir"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "--job_dir", dest="model", required=True,
                        help="the trained model: a trainer job dir (model.keras + "
                             "model_spec.json)")
    parser.add_argument("--output_dir", "--export_base", dest="output_dir", required=True,
                        help="model base path, e.g. models/age (versions go under it)")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: newest existing + 1, else 1)")
    parser.add_argument("--model_name", default=contract.DEFAULT_MODEL_NAME,
                        help="model name in the warmup requests")
    parser.add_argument("--warmup_images", nargs="*", default=None,
                        help="JPEG/PNG files for the warmup requests (default: synthetic images)")
    parser.add_argument("--test_time_flip", choices=("spec", "true", "false"), default="spec",
                        help="average each face with its mirror image in the signatures "
                             "(default: as the model's spec says)")
    arg_types.add_max_image_pixels(parser, image_header.DEFAULT_MAX_PIXELS)
    parser.add_argument("--no_photo_signature", action="store_true",
                        help="leave out predict_photo (face detection in whole photos)")
    parser.add_argument("--max_faces", type=int, default=contract.DEFAULT_MAX_FACES,
                        help="predict_photo: faces returned per photo, highest detection "
                             "score first (default %(default)s)")
    parser.add_argument("--min_face_size", type=float,
                        default=photo_predictor.DEFAULT_MIN_FACE_SIZE,
                        help="predict_photo: smallest face searched for, in pixels (of the "
                             "photo, or of its 1024-pixel-side downscale when larger); "
                             "larger is faster (default %(default)s)")
    console.add_verbose_flag(parser)
    argv = sys.argv[1:] if argv is None else argv
    arg_types.warn_renamed(argv, RENAMED_FLAGS)
    args = parser.parse_args(argv)
    images = None
    if args.warmup_images:
        images = [tf.io.gfile.GFile(p, "rb").read() for p in args.warmup_images]
    try:
        model, spec = load_trained_model(args.model)
        if args.test_time_flip != "spec":
            spec = dataclasses.replace(spec, test_time_flip=args.test_time_flip == "true")
        path = export_saved_model(None, args.output_dir, args.version, model=model, spec=spec,
                                  model_name=args.model_name, warmup_images=images,
                                  max_image_pixels=args.max_image_pixels,
                                  photo_signature=not args.no_photo_signature,
                                  max_faces=args.max_faces, min_face_size=args.min_face_size)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
