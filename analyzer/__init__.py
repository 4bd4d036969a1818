"""The Python API: photos in, every face's age and gender out (`FaceAnalyzer`).

    from agegender import FaceAnalyzer
    analyzer = FaceAnalyzer.load("models/age")
    faces = analyzer.analyze("photo.jpg")

The top floor of the project: it imports the parts (the exported SavedModel, the LiteRT
files, the serving client) lazily, per backend, so an analyzer talking to a server over
REST never loads TensorFlow. `agegender.FaceAnalyzer` resolves here on first use.
"""
from analyzer.face_analyzer import FaceAnalyzer

__all__ = ["FaceAnalyzer"]
