"""The Python API's exceptions (`agegender.FaceAnalyzer`), TF-free.

Every failure a caller of the API can act on is one of these, with a one-line message:

- `AnalyzerError`: the base class; catch it to catch them all.
- `ModelLoadError`: the model cannot be used (missing path, not a SavedModel / job dir /
  LiteRT file, a signature it needs is missing, unknown server address form).
- `ImageError`: one input image is refused (not an image, over the pixel limit, unreadable);
  `reason` is the skip reason the records job and the evaluation report use for it, so
  a bulk caller can count skips the same way.
- `ServerError`: a TF Serving endpoint failed or answered something that is not a valid
  answer; `code` is the gRPC status name or the HTTP status (None for a malformed answer).

`ReasonError` is the base of every project error that carries `reason`, a short code a
caller can count or branch on beside the one-line message: `ImageError` here,
`agegender.names.LabelError`, `video.io.VideoError`.

Plain Python, no imports beyond the standard library: the ground floor of `agegender`.
"""

# Skip reasons, spelled as the records job's report spells them (agegender.image_sources).
UNREADABLE = "unreadable"
NOT_A_REGULAR_FILE = "not_a_regular_file"  # a directory, FIFO, device
FILE_TOO_LARGE = "file_too_large"  # more bytes than any photo has
UNDECODABLE = "undecodable"  # not a JPEG/PNG/GIF/BMP/WebP, or its header is corrupt
IMAGE_TOO_LARGE = "image_too_large"  # declares more pixels than max_image_pixels
IMAGE_TOO_COSTLY = "image_too_costly"  # decoding would cost far more than its pixels
NOT_AN_IMAGE = UNDECODABLE  # the contract's name for the same reason


class ReasonError(Exception):
    """An error with `reason`, a short code (e.g. "image_too_large"), and a message."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class AnalyzerError(Exception):
    """Base class of every error the Python API raises."""


class ModelLoadError(AnalyzerError):
    """The model cannot be loaded or does not have what the analyzer needs."""


class ImageError(ReasonError, AnalyzerError):
    """An input image is refused; `reason` is its skip reason (e.g. "image_too_large")."""


class ServerError(AnalyzerError):
    """A model server failed or sent a malformed answer. `code`: the gRPC status name
    ("UNAVAILABLE", "INVALID_ARGUMENT", ...), the HTTP status (int), or None when the
    answer itself is malformed."""

    def __init__(self, code, message):
        super().__init__(message if code is None else f"{code}: {message}")
        self.code = code
        self.message = message
