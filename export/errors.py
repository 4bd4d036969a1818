"""The export's one error type, TF-free so that readers of the exported files' metadata
(`export.litert_metadata`) load without TensorFlow."""


class ExportError(Exception):
    """A clear, user-facing export failure (missing job files, existing version, ...)."""
