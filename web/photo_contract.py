"""The `predict_photo` signature as the page uses it: the request body, faces from an answer.

The signature's name and its input and output names are the serving contract's
(`agegender.serving_contract`, plain Python: importing it loads no TensorFlow), the module
the export writes the signature from.

The signature: input `image_bytes` string [N] (a JPEG or PNG photo) and optional `key`;
outputs per photo, padded to `max_faces`: `num_faces` int32 [N], `boxes` float32 [N, F, 4]
as (x1, y1, x2, y2) in pixels of the decoded photo (x right, y down), `landmarks`
[N, F, 5, 2], `face_scores` [N, F], `age` [N, F], and when the model has them `age_std`
[N, F], `age_interval_50`/`age_interval_80` [N, F, 2], `gender` "M"/"F" [N, F],
`gender_probability` [N, F, 2] (male, female) and the age head's raw output (e.g.
`age_distribution` [N, F, 101], which the page does not read). Entries beyond `num_faces`
are padding.
"""
import base64
import json
import math

from agegender import serving_contract as contract

SIGNATURE = contract.PREDICT_PHOTO
IMAGE_BYTES = contract.IMAGE_BYTES

NUM_FACES = contract.NUM_FACES
BOXES = contract.BOXES
LANDMARKS = contract.LANDMARKS
FACE_SCORES = contract.FACE_SCORES
AGE = contract.AGE
AGE_STD = contract.AGE_STD
AGE_INTERVAL_80 = contract.AGE_INTERVAL_80
GENDER = contract.GENDER
GENDER_PROBABILITY = contract.GENDER_PROBABILITY

GENDERS = contract.GENDER_LETTERS  # the order of gender_probability's last axis


class ContractError(ValueError):
    """An answer that does not have the shape of a `predict_photo` answer."""


def request_body(image_bytes):
    """The TF Serving REST predict body for one photo (row format, named input)."""
    return {"signature_name": SIGNATURE,
            "instances": [{IMAGE_BYTES: {"b64": base64.b64encode(image_bytes).decode("ascii")}}]}


def request_bytes(image_bytes):
    """`request_body` encoded as JSON bytes, built without the intermediate str copies
    (a 16 MB photo is 22 MB of base64: one copy of it is held, not three)."""
    head, tail = json.dumps(request_body(b"")).encode("ascii").split(b'""')
    return b"".join((head, b'"', base64.b64encode(image_bytes), b'"', tail))


def _number(value, what):
    """A JSON number -> float, None when not finite (JSON for browsers has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContractError(f"{what} is not a number: {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def _numbers(value, shape, what):
    """A nested JSON list of the given shape -> nested lists of floats (or None)."""
    if not shape:
        return _number(value, what)
    if not isinstance(value, list) or len(value) != shape[0]:
        raise ContractError(f"{what} should be a list of {shape[0]}, got {value!r:.80}")
    return [_numbers(v, shape[1:], what) for v in value]


def _row(prediction, name, index, count, required):
    """Output `name`'s rows for faces 0..count-1 (index: the face), or None when absent."""
    if name not in prediction:
        if required:
            raise ContractError(f"the answer has no '{name}' output (is the model's "
                                f"'{SIGNATURE}' signature the one this page expects?)")
        return None
    rows = prediction[name]
    if not isinstance(rows, list) or len(rows) < count:
        raise ContractError(f"'{name}' should hold at least num_faces={count} entries")
    return rows[index]


def faces(payload):
    """A REST predict answer for ONE photo -> [face dict], padding dropped.

    Each face: `box` [x1, y1, x2, y2], `score`, `landmarks` [[x, y] * 5], `age`, and when the
    model exports them `age_std`, `age_interval_80` [low, high], `gender` ("M"/"F") and
    `gender_probability` (of that gender). Raises ContractError on any other shape.
    """
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list) or len(predictions) != 1 or not isinstance(
            predictions[0], dict):
        raise ContractError("the answer has no 'predictions' list with one entry per photo")
    prediction = predictions[0]
    count = prediction.get(NUM_FACES)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ContractError(f"'{NUM_FACES}' should be a count, got {count!r}")
    result = []
    for i in range(count):
        face = {
            "box": _numbers(_row(prediction, BOXES, i, count, True), [4], BOXES),
            "age": _number(_row(prediction, AGE, i, count, True), AGE),
        }
        score = _row(prediction, FACE_SCORES, i, count, False)
        if score is not None:
            face["score"] = _number(score, FACE_SCORES)
        landmarks = _row(prediction, LANDMARKS, i, count, False)
        if landmarks is not None:
            face["landmarks"] = _numbers(landmarks, [5, 2], LANDMARKS)
        std = _row(prediction, AGE_STD, i, count, False)
        if std is not None:
            face["age_std"] = _number(std, AGE_STD)
        interval = _row(prediction, AGE_INTERVAL_80, i, count, False)
        if interval is not None:
            face["age_interval_80"] = _numbers(interval, [2], AGE_INTERVAL_80)
        gender = _row(prediction, GENDER, i, count, False)
        if gender is not None:
            if gender not in GENDERS:
                raise ContractError(f"'{GENDER}' should be one of {GENDERS}, got {gender!r}")
            face["gender"] = gender
            probability = _row(prediction, GENDER_PROBABILITY, i, count, False)
            if probability is not None:
                face["gender_probability"] = _numbers(
                    probability, [2], GENDER_PROBABILITY)[GENDERS.index(gender)]
        result.append(face)
    return result
