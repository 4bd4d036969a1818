"""The `predict_photo` signature as the page uses it: the request body. Answers are read by
the project's one reader, `agegender.photo_answers` (see `web.backend.page_faces`).

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

from agegender import serving_contract as contract

SIGNATURE = contract.PREDICT_PHOTO
IMAGE_BYTES = contract.IMAGE_BYTES


def request_body(image_bytes):
    """The TF Serving REST predict body for one photo (row format, named input)."""
    return {"signature_name": SIGNATURE,
            "instances": [{IMAGE_BYTES: {"b64": base64.b64encode(image_bytes).decode("ascii")}}]}


def request_bytes(image_bytes):
    """`request_body` encoded as JSON bytes, built without the intermediate str copies
    (a 16 MB photo is 22 MB of base64: one copy of it is held, not three)."""
    head, tail = json.dumps(request_body(b"")).encode("ascii").split(b'""')
    return b"".join((head, b'"', base64.b64encode(image_bytes), b'"', tail))
