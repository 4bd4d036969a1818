"""The one reader of a model's answers: signature outputs -> `agegender.Face`s.

Every path that asks a model (the Python API's backends: in-process SavedModel, job dir,
LiteRT, gRPC, REST; hence predict mode, the serving client, the evaluation) reads its
answers here, so a face means the same thing everywhere:

- `read_photos(outputs)`: `predict_photo` outputs (padded [N, max_faces, ...], from the
  signature, gRPC tensors or REST JSON's columnar "outputs") -> one `PhotoAnswer(key, faces)`
  per photo, padding dropped.
- `read_crops(outputs)`: one crop signature's outputs (`serving_default`, [N, ...]) -> one
  `Face` per image (box None).
- `read_rest(payload)`: a REST predict answer in either of TF Serving's formats
  ("outputs" columnar or "predictions" rows) for `predict_photo`.

`gender_probability` is the probability of the chosen `gender` (the signature exports
both classes' probabilities; the reader keeps the chosen one).

`strict=True` is for answers from a peer that is not trusted (a REST endpoint, as the web
page reads): any output of the wrong type or shape, an unknown gender letter or a
non-finite age, box or distribution raises `ServerError` (code None) with a message naming
the output; a non-finite optional value (spread, interval, landmarks, score, gender
probability) reads as None.
Without it the reader trusts the shapes (the model in process, gRPC tensors) and only
converts.

`photo_faces` is the signature-named dict view of the same faces, for the code that prints
and draws by output name. NumPy only: a REST client needs no TensorFlow.
"""
import collections
import math

import numpy as np

from agegender import serving_contract as contract
from agegender.errors import ServerError
from agegender.results import GENDER_NAMES, Face

AGE_DISTRIBUTION = "age_distribution"  # the distribution head's raw output (agegender.heads)

PhotoAnswer = collections.namedtuple("PhotoAnswer", ["key", "faces"])


def read_photos(outputs, strict=False):
    """`predict_photo` outputs {name: array or nested list} -> [PhotoAnswer(key, [Face])]."""
    if strict and not isinstance(outputs, dict):
        raise ServerError(None, f"the answer's outputs should be an object, got "
                                f"{type(outputs).__name__}")
    counts = _counts(_required(outputs, contract.NUM_FACES), strict)
    keys = outputs.get(contract.KEY)
    columns = {name: _column(outputs, name, len(counts), strict) for name in outputs
               if name not in (contract.NUM_FACES, contract.KEY)}
    answers = []
    for i, count in enumerate(counts):
        rows = {name: _rows(values[i], count, name, strict) for name, values in columns.items()}
        faces = [_face({name: row[j] for name, row in rows.items()}, strict, photo=True)
                 for j in range(count)]
        answers.append(PhotoAnswer(_key(keys, i), faces))
    return answers


def read_crops(outputs, strict=False):
    """One crop signature's outputs {name: [N, ...]} -> [Face] (box, landmarks, score None)."""
    if strict and not isinstance(outputs, dict):
        raise ServerError(None, "the answer's outputs should be an object")
    count = len(_required(outputs, contract.AGE))
    columns = {name: _column(outputs, name, count, strict) for name in outputs
               if name != contract.KEY}
    return [_face({name: values[i] for name, values in columns.items()}, strict, photo=False)
            for i in range(count)]


def read_rest(payload, strict=True):
    """A TF Serving REST predict answer for `predict_photo`, columnar ("outputs") or row
    ("predictions") format -> [PhotoAnswer]."""
    if isinstance(payload, dict) and isinstance(payload.get("outputs"), dict):
        return read_photos(payload["outputs"], strict)
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
        raise ServerError(None, "the answer has neither an 'outputs' object nor a "
                                "'predictions' list of one object per photo")
    names = set().union(*predictions) if predictions else {contract.NUM_FACES}
    columns = {name: [p.get(name) for p in predictions] for name in names}
    for name, values in columns.items():
        if any(v is None for v in values):
            raise ServerError(None, f"'{name}' is missing from some photos' predictions")
    return read_photos(columns, strict)


# -- the signature-named view -----------------------------------------------------------


def photo_faces(outputs):
    """`predict_photo` outputs -> one {"key", "num_faces", "faces": [face dict]} per photo.
    A face dict holds "box", "score", "landmarks" and each output the model has under its
    signature name ("age", "age_std", "age_interval_80", "gender" as its letter,
    "gender_probability": the chosen gender's), as plain Python values."""
    return photo_dicts(read_photos(outputs))


def photo_dicts(answers):
    """[PhotoAnswer] -> the signature-named view (`photo_faces`)."""
    return [{"key": answer.key, "num_faces": len(answer.faces),
             "faces": [face_fields(face) for face in answer.faces]}
            for answer in answers]


def face_fields(face):
    """A `Face` as the signature names its outputs (gender as its letter), the fields the
    model does not export left out."""
    fields = {"box": list(face.box) if face.box is not None else None, "score": face.score,
              "landmarks": None if face.landmarks is None else [list(p) for p in face.landmarks],
              contract.AGE: face.age}
    optional = {contract.AGE_STD: face.age_std,
                contract.AGE_INTERVAL_50: face.age_interval_50,
                contract.AGE_INTERVAL_80: face.age_interval_80,
                contract.GENDER: gender_letter(face),
                contract.GENDER_PROBABILITY: face.gender_probability}
    fields.update({k: list(v) if isinstance(v, tuple) else v for k, v in optional.items()
                   if v is not None})
    if face.box is None:
        del fields["box"], fields["score"], fields["landmarks"]
    return fields


def gender_letter(face):
    return None if face.gender is None else contract.GENDER_LETTERS[face.gender_index]


def box_area(box):
    x1, y1, x2, y2 = box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def largest_face(faces):
    """Index of the largest face (box area) of a list of `Face`s or face dicts, None if
    empty: the face a labelled photo's label belongs to (the subject of a portrait)."""
    if not faces:
        return None
    return int(np.argmax([box_area(f.box if isinstance(f, Face) else f["box"]) for f in faces]))


def gender_index(face):
    """0 (male), 1 (female), or None for a model without a gender head. `face`: a `Face`,
    or a face's or one image's outputs by name (the letter as str or bytes)."""
    if isinstance(face, Face):
        return face.gender_index
    letter = face.get(contract.GENDER)
    if isinstance(letter, bytes):
        letter = letter.decode("ascii", "replace")
    return None if not letter else contract.GENDER_LETTERS.index(letter)


def gender_confidence(face):
    """The probability of the face's predicted gender (calibrated), or None. `face`: a
    `Face`, or outputs by name holding the chosen gender's probability or both classes'."""
    if isinstance(face, Face):
        return face.gender_probability
    probability = face.get(contract.GENDER_PROBABILITY)
    if probability is None:
        return None
    return float(np.max(probability))


# -- reading ----------------------------------------------------------------------------


def _fail(message):
    raise ServerError(None, message)


def _required(outputs, name):
    if name not in outputs:
        _fail(f"the answer has no '{name}' output")
    return outputs[name]


def _counts(values, strict):
    if not strict:
        return [int(n) for n in np.asarray(values).reshape(-1)]
    values = values.tolist() if isinstance(values, np.ndarray) else values
    if not isinstance(values, list):
        _fail(f"'{contract.NUM_FACES}' should be a list of counts, got {values!r:.80}")
    for n in values:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            _fail(f"'{contract.NUM_FACES}' should hold counts, got {n!r:.80}")
    return values


def _column(outputs, name, count, strict):
    values = outputs[name]
    if not strict:
        return values if isinstance(values, np.ndarray) else np.asarray(
            values, dtype=object if _is_text(values) else None)
    values = values.tolist() if isinstance(values, np.ndarray) else values
    if not isinstance(values, list) or len(values) != count:
        _fail(f"'{name}' should hold one entry per photo ({count}), got {values!r:.80}")
    return values


def _rows(values, count, name, strict):
    if strict and (not isinstance(values, list) or len(values) < count):
        _fail(f"'{name}' should hold at least num_faces={count} entries, got {values!r:.80}")
    return values


def _key(keys, i):
    if keys is None:
        return None
    key = np.asarray(keys, dtype=object).reshape(-1)[i] if len(keys) > i else None
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def _is_text(values):
    first = values
    while isinstance(first, (list, tuple, np.ndarray)) and len(first):
        first = first[0]
    return isinstance(first, (bytes, str))


def _face(values, strict, photo):
    """One face's outputs {name: value} -> Face."""
    read = _StrictField if strict else _Field
    gender = read.text(values.get(contract.GENDER), contract.GENDER)
    probability = values.get(contract.GENDER_PROBABILITY)
    if gender is not None:
        if gender not in contract.GENDER_LETTERS:
            if gender == "" and not strict:
                gender = None  # a padded row read past num_faces: no gender
            else:
                _fail(f"'{contract.GENDER}' should be one of {contract.GENDER_LETTERS}, "
                      f"got {gender!r:.20}")
    chosen = None
    if gender is not None and probability is not None:
        if isinstance(probability, (list, tuple, np.ndarray)) and np.ndim(probability) == 1:
            pair = read.numbers(probability, 2, contract.GENDER_PROBABILITY)
            chosen = pair[contract.GENDER_LETTERS.index(gender)]
        else:  # already the chosen gender's (an answer re-read)
            chosen = read.number(probability, contract.GENDER_PROBABILITY)
    distribution = values.get(AGE_DISTRIBUTION)
    face = dict(
        age=read.number(_required(values, contract.AGE), contract.AGE, required=True),
        age_std=read.optional(values.get(contract.AGE_STD), contract.AGE_STD),
        age_interval_50=read.pair(values.get(contract.AGE_INTERVAL_50),
                                  contract.AGE_INTERVAL_50),
        age_interval_80=read.pair(values.get(contract.AGE_INTERVAL_80),
                                  contract.AGE_INTERVAL_80),
        age_distribution=None if distribution is None else read.distribution(distribution),
        gender=None if gender is None else GENDER_NAMES[gender],
        gender_probability=chosen)
    if photo:
        landmarks = values.get(contract.LANDMARKS)
        face.update(
            box=tuple(read.numbers(_required(values, "box" if "box" in values else
                                             contract.BOXES), 4, contract.BOXES,
                                   required=True)),
            score=read.optional(values.get(contract.FACE_SCORES), contract.FACE_SCORES),
            landmarks=None if landmarks is None else read.points(landmarks))
    return Face(**face)


class _Field:
    """Conversions for a trusted answer (arrays of the right shape)."""

    @staticmethod
    def text(value, name):
        if value is None:
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    @staticmethod
    def number(value, name, required=False):
        return float(value)

    @classmethod
    def optional(cls, value, name):
        return None if value is None else cls.number(value, name)

    @classmethod
    def numbers(cls, value, size, name, required=False):
        return [cls.number(v, name, required) for v in np.asarray(value).reshape(-1)[:size]]

    @classmethod
    def pair(cls, value, name):
        return None if value is None else tuple(cls.numbers(value, 2, name))

    @staticmethod
    def points(value):
        return tuple((float(x), float(y)) for x, y in np.asarray(value, float).reshape(-1, 2))

    @staticmethod
    def distribution(value):
        return np.asarray(value, np.float32)


class _StrictField(_Field):
    """Conversions for an untrusted answer: every type and size checked."""

    @staticmethod
    def text(value, name):
        if value is None:
            return None
        if not isinstance(value, str):
            _fail(f"'{name}' should be text, got {value!r:.40}")
        return value

    @staticmethod
    def number(value, name, required=False):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"'{name}' should be a number, got {value!r:.40}")
        value = float(value)
        if not math.isfinite(value):
            if required:
                _fail(f"'{name}' is not a finite number: {value}")
            return None  # an optional value the model could not give (JSON has no NaN)
        return value

    @classmethod
    def numbers(cls, value, size, name, required=False):
        if not isinstance(value, list) or len(value) != size:
            _fail(f"'{name}' should be a list of {size} numbers, got {value!r:.60}")
        return [cls.number(v, name, required) for v in value]

    @classmethod
    def pair(cls, value, name):
        if value is None:
            return None
        pair = cls.numbers(value, 2, name)
        return None if None in pair else tuple(pair)

    @classmethod
    def points(cls, value):
        if not isinstance(value, list) or len(value) != 5:
            _fail(f"'{contract.LANDMARKS}' should be 5 points, got {value!r:.60}")
        points = tuple(tuple(cls.numbers(p, 2, contract.LANDMARKS)) for p in value)
        return None if any(None in p for p in points) else points

    @classmethod
    def distribution(cls, value):
        if not isinstance(value, list) or not value:
            _fail(f"'{AGE_DISTRIBUTION}' should be a list of probabilities")
        return np.asarray([cls.number(v, AGE_DISTRIBUTION, True) for v in value], np.float32)
