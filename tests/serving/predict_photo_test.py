"""predict_photo through the local server, over REST and gRPC, as any other signature.

The request shapes are the ones the web page and `serving.client` send: REST row format
with `"signature_name": "predict_photo"` and named b64 instances, REST columnar, and a gRPC
PredictRequest. Answers must equal the SavedModel's own (the `reference` fixture).
"""
import base64

import numpy as np
import pytest

from agegender import serving_contract as contract
from serving.client import ClientError

TOL = 1e-4
PHOTO_NAMES = ("num_faces", "boxes", "landmarks", "face_scores", "age", "age_std",
               "age_interval_80", "gender", "gender_probability", "key")  # the web page's


@pytest.fixture(scope="module")
def photos(synthetic_photos, photo_tools):
    """Encoded photos: three faces (JPEG), one 40-pixel face (grey JPEG), none (PNG)."""
    several = synthetic_photos(1, 1, faces_per_photo=(3, 3), face_sizes=(70, 150))[0]
    small = synthetic_photos(1, 0, faces_per_photo=(1, 1), face_sizes=(40, 40),
                             max_rotation=5)[0]
    return [photo_tools.encode(several.image), photo_tools.encode(small.image, mode="L"),
            photo_tools.encode(photo_tools.plain(), "PNG")]


def _b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


def _same(got, want, name):
    want = np.asarray(want)
    if want.dtype == object:
        want = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v,
                            otypes=[object])(want)
        got = np.asarray(got, dtype=object)
        got = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v,
                           otypes=[object])(got)
        assert (got == want).all(), name
    else:
        np.testing.assert_allclose(np.asarray(got, float), want.astype(float), atol=TOL,
                                   err_msg=name)


def test_rest_row_format_as_the_web_page_sends_it(rest, photos, reference):
    keys = ["several", "small", "none"]
    body = {"signature_name": contract.PREDICT_PHOTO,
            "instances": [{"image_bytes": _b64(p), "key": k} for p, k in zip(photos, keys)]}
    status, out = rest.request("POST", "/v1/models/age:predict", body)
    assert status == 200, out
    want = reference(photos, signature=contract.PREDICT_PHOTO,
                     key=np.array([k.encode() for k in keys], dtype=object))
    predictions = out["predictions"]
    assert [p["num_faces"] for p in predictions] == [3, 1, 0]
    assert set(PHOTO_NAMES) <= set(predictions[0])
    for name in want:
        _same([p[name] for p in predictions], want[name], name)
    assert predictions[2]["gender"] == [""] * contract.DEFAULT_MAX_FACES
    # One photo alone, without a key (the page's body): the key is optional.
    single = {"signature_name": contract.PREDICT_PHOTO, "instances": [{"image_bytes":
                                                                        _b64(photos[1])}]}
    status, out = rest.request("POST", "/v1/models/age:predict", single)
    assert status == 200 and out["predictions"][0]["num_faces"] == 1


def test_rest_columnar_and_grpc_give_the_same_faces(rest, grpc_client, photos, reference):
    by_rest = rest.predict_photos(photos)
    by_grpc = grpc_client.predict_photos(photos, keys=["a", "b", "c"])
    assert [p["num_faces"] for p in by_rest] == [p["num_faces"] for p in by_grpc] == [3, 1, 0]
    assert [p["key"] for p in by_grpc] == ["a", "b", "c"]
    want = reference(photos, signature=contract.PREDICT_PHOTO)
    for answers in (by_rest, by_grpc):
        for i, photo in enumerate(answers):
            for j, face in enumerate(photo["faces"]):
                np.testing.assert_allclose(face["box"], want["boxes"][i, j], atol=TOL)
                np.testing.assert_allclose(face["age"], want["age"][i, j], atol=TOL)
                assert face["gender"] == want["gender"][i, j].decode()


def test_a_photo_over_the_pixel_limit_is_invalid_argument(rest, grpc_client, photos, png_bomb):
    """Refused from its header before decoding (the signature's assertion: tests/export), on
    both protocols, as the client's error."""
    with pytest.raises(ClientError) as grpc_error:
        grpc_client.predict_photos([photos[0], png_bomb])
    assert grpc_error.value.code == "INVALID_ARGUMENT"
    status, out = rest.request("POST", "/v1/models/age:predict", {
        "signature_name": contract.PREDICT_PHOTO, "instances": [{"image_bytes":
                                                                 _b64(png_bomb)}]})
    assert status == 400 and out["error"]
    # The server is fine afterwards.
    assert grpc_client.predict_photos(photos[2:])[0]["num_faces"] == 0
