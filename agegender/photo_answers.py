"""Reading `predict_photo` answers: padded per-photo outputs -> each photo's faces.

Owns turning the signature's dense outputs (`agegender.serving_contract`; from the
SavedModel in process, gRPC or REST JSON alike) into plain Python, for every reader: the
serving client, trainer predict mode, the evaluation, the benchmarks.

- `photo_faces(outputs)` -> one dict per photo: {"key", "num_faces", "faces": [face]},
  padding dropped; a face holds "box" [x1, y1, x2, y2], "score", "landmarks" and every
  per-face output under its own name ("age", "gender", "gender_probability", "age_std",
  "age_interval_80", ...).
- `largest_face(faces)`: the face a labelled photo's label belongs to.
- `gender_index(face)`, `gender_confidence(face)`: the face's gender as a class index and
  the (calibrated) probability of that class (of one image's serving_default outputs too).

NumPy only: a REST client needs no TensorFlow.
"""
import numpy as np

from agegender import serving_contract as contract

# Per-face field names where the output's name is a plural.
_FACE_FIELDS = {contract.BOXES: "box", contract.FACE_SCORES: "score"}


def photo_faces(outputs):
    """`predict_photo` outputs ({name: array or nested list}, from the signature, gRPC or
    REST) -> one dict per photo: {"key", "num_faces", "faces": [face, ...]}, padding
    dropped. A face holds "box" [x1, y1, x2, y2], "score", "landmarks" and every per-face
    output under its own name ("age", "gender", "gender_probability", "age_std", ...), as
    plain Python values (strings decoded)."""
    num_faces = np.asarray(outputs[contract.NUM_FACES]).reshape(-1).astype(int)
    keys = outputs.get(contract.KEY)
    per_face = {name: np.asarray(values, dtype=object if _is_text(values) else None)
                for name, values in outputs.items()
                if name not in (contract.NUM_FACES, contract.KEY)}
    photos = []
    for i, n in enumerate(num_faces):
        faces = []
        for j in range(n):
            faces.append({_FACE_FIELDS.get(name, name): _plain(values[i][j])
                          for name, values in per_face.items()})
        key = None if keys is None else _plain(np.asarray(keys, dtype=object).reshape(-1)[i])
        photos.append({"key": key, "num_faces": int(n), "faces": faces})
    return photos


def _is_text(values):
    first = values
    while isinstance(first, (list, tuple, np.ndarray)) and len(first):
        first = first[0]
    return isinstance(first, (bytes, str))


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_plain(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def box_area(box):
    x1, y1, x2, y2 = box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def largest_face(faces):
    """Index of the largest face (box area) of a `photo_faces` face list, None if empty:
    the face a labelled photo's label belongs to (the subject of a portrait)."""
    if not faces:
        return None
    return int(np.argmax([box_area(face["box"]) for face in faces]))


def gender_index(face):
    """0 (male), 1 (female), or None for a model without a gender head. `face`: a face's
    or one image's outputs by name (the letter as str or bytes)."""
    letter = face.get(contract.GENDER)
    if isinstance(letter, bytes):
        letter = letter.decode("ascii", "replace")
    return None if not letter else contract.GENDER_LETTERS.index(letter)


def gender_confidence(face):
    """The probability of the face's predicted gender (calibrated), or None."""
    probability = face.get(contract.GENDER_PROBABILITY)
    return None if probability is None else float(max(probability))
