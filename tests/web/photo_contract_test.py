"""web.photo_contract: the predict_photo request the page sends."""
import base64
import json
from web import photo_contract


def test_request_body_is_tf_servings_row_format_for_predict_photo():
    body = photo_contract.request_body(b"\xff\xd8\xffjpeg")
    assert body["signature_name"] == "predict_photo"
    (instance,) = body["instances"]
    assert base64.b64decode(instance["image_bytes"]["b64"]) == b"\xff\xd8\xffjpeg"


def test_request_bytes_are_the_request_body_as_json():
    photo = bytes(range(256)) * 50
    assert json.loads(photo_contract.request_bytes(photo)) == photo_contract.request_body(photo)
