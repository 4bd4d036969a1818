"""Clients for a TF Serving age/gender model (real TF Serving or `serving.server`).

The wire clients are `analyzer.tf_serving`'s (re-exported here, where callers have always
found them):
  predict_grpc("localhost:8500", [jpeg_bytes, ...])  -> [{"age": 31.2, "gender": "F", ...}]
  predict_rest("localhost:8501", [jpeg_bytes, ...])  -> same
  GrpcClient / RestClient keep one channel / connection pool for repeated calls; their
  `photo_answers(photos)` calls the predict_photo signature -> one
  PhotoAnswer(key, [agegender.Face]) per photo, `predict_photos(photos)` the same as
  {"key", "num_faces", "faces": [{"box", "age", "gender", ...}]} (`agegender.photo_answers`).
Failures raise `ClientError` (an `agegender.ServerError`) with `code` (gRPC status name,
or the HTTP status for REST) and the server's message; a server that is down gives code
UNAVAILABLE after `timeout` seconds at most. For typed answers in one call, use the
Python API: `FaceAnalyzer.from_server(...)` (what this command runs on).

CLI (`analyzer.predict` with a server as its default model):
  python -m serving.client --server=localhost:8500 --protocol=grpc --model_name=age IMAGE...
  python -m serving.client --photos [--draw_dir=DIR] PHOTO...   (one line per face found,
      "no face found" for a photo without one; DIR gets a copy of each photo with the boxes
      and ages drawn on it)
Importing this module, and the REST protocol, load no TensorFlow (gRPC's protos do).
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import sys

from analyzer.tf_serving import (DEFAULT_SIGNATURE, MODEL, ClientError, GrpcClient,  # noqa: F401
                                 RestClient, predict_grpc, predict_rest)


def main(argv=None):
    """`python -m serving.client`: `analyzer.predict` with a server as its default model."""
    from analyzer import predict

    return predict.main(argv, default_server=True)


if __name__ == "__main__":
    sys.exit(main())
