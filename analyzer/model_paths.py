"""What a model path is: a SavedModel (version or base dir), a trainer job dir.

Owns resolving a SavedModel base directory to its newest numbered version (TF Serving's
rule) and telling a job dir apart, with `ModelLoadError`s that say what was expected.
"""
import os

from agegender import job_dir as job_dir_lib
from agegender import model_layout
from agegender.errors import ModelLoadError


def is_job_dir(path):
    """A trainer job dir: model_spec.json beside model.keras, and no saved_model.pb."""
    return (os.path.isfile(os.path.join(path, job_dir_lib.SPEC_FILE))
            and not model_layout.is_saved_model_dir(path))


def resolve_saved_model(path):
    """A version directory, or the newest numeric version under a TF Serving base path."""
    if model_layout.is_saved_model_dir(path):
        return path
    if not os.path.isdir(path) and "://" not in path:
        raise ModelLoadError(f"model {path!r} does not exist")
    version = model_layout.newest_version(path)
    if version is None:
        raise ModelLoadError(f"model {path!r} holds no saved_model.pb and no numeric version "
                             "directory with one (export with `python -m export.export_model`)")
    return model_layout.version_dir(path, version)


def version_of(path):
    """The version number of a SavedModel directory named by it, else None."""
    name = os.path.basename(os.path.normpath(path))
    return int(name) if name.isdigit() else None
