"""The project's shared core: record schema, age labels, name parsing and image preprocessing,
and the Python API's entry point.

    from agegender import FaceAnalyzer, Face, AnalyzerError
    faces = FaceAnalyzer.load("models/age").analyze("photo.jpg")

Everything that the Beam job, the trainer, the export and the serving code must agree on
lives here and only here, so that training and serving can never disagree:

- `schema`: feature keys, the `tf.io` parsing spec, the TFDS feature description.
- `age_histogram`: the 101-bin Gaussian age label (NumPy for the writer, TF for in-graph).
- `names`: labels from UTKFace-style file names and from label CSVs.
- `preprocessing`: encoded image bytes -> model input pixels.
- `results`, `errors`: the Python API's answer types and exceptions (TF-free).

`FaceAnalyzer` lives in the `analyzer` package (the top floor: it reaches the exported
model, LiteRT and the serving client) and is imported on first access (PEP 562), so that
`import agegender` and its TF-free modules never load TensorFlow or the parts above.
"""
from agegender.errors import AnalyzerError, ImageError, ModelLoadError, ServerError
from agegender.results import Face, ModelInfo

__all__ = ["FaceAnalyzer", "Face", "ModelInfo", "AnalyzerError", "ModelLoadError",
           "ImageError", "ServerError"]


def __getattr__(name):
    if name == "FaceAnalyzer":
        from analyzer.face_analyzer import FaceAnalyzer

        return FaceAnalyzer
    raise AttributeError(f"module 'agegender' has no attribute {name!r}")
