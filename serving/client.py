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

CLI (like the original project's predict mode):
  python -m serving.client --server=localhost:8500 --protocol=grpc --model_name=age IMAGE...
  python -m serving.client --photos [--draw_dir=DIR] PHOTO...   (one line per face found,
      "no face found" for a photo without one; DIR gets a copy of each photo with the boxes
      and ages drawn on it)
Importing this module, and the REST protocol, load no TensorFlow (gRPC's protos do).
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import sys

from agegender import console, image_header, prediction_line
from agegender import serving_contract as contract
from agegender.errors import AnalyzerError, ImageError, ServerError
from analyzer.face_analyzer import FaceAnalyzer
from analyzer.tf_serving import (DEFAULT_SIGNATURE, MODEL, ClientError, GrpcClient,  # noqa: F401
                                 RestClient, predict_grpc, predict_rest)


def _read(paths):
    """[(path, bytes)] of the files; prints the error and returns None when one is unreadable."""
    try:
        return [(path, open(path, "rb").read()) for path in paths]
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def _print_photo(path, data, faces, args, drawn):
    for line in prediction_line.photo_lines(path, faces):
        print(line)
    if args.draw_dir:
        from faces import drawing

        try:
            picture = drawing.draw(data, faces, [prediction_line.face_label(f) for f in faces],
                                   args.max_image_pixels)
            drawing.save(picture, args.draw_dir, path, drawn)
        except (ValueError, OSError) as e:  # PIL cannot read it, or the directory is not writable
            print(f"warning: {path}: not drawn: {e}", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description="Predict age (and gender) of face images with a "
                                            "served model.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG/PNG files")
    p.add_argument("--server", default=None,
                   help="host:port (default localhost:8500 for gRPC, localhost:8501 for REST)")
    p.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    p.add_argument("--model_name", default=MODEL)
    p.add_argument("--model_version", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=16, help="images per request")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--max_image_pixels", type=int, default=image_header.DEFAULT_MAX_PIXELS,
                   help="images whose header declares more pixels are refused unsent")
    p.add_argument("--photos", action="store_true",
                   help="the images are ordinary photos: find the faces in them (the model's "
                        "predict_photo signature) and print one line per face")
    p.add_argument("--draw_dir", default=None,
                   help="with --photos: write a copy of each photo with its faces' boxes and "
                        "ages drawn on it into this directory")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    if args.draw_dir and not args.photos:
        p.error("--draw_dir needs --photos")
    if args.max_image_pixels <= 0:
        p.error("--max_image_pixels must be a positive number of pixels")
    server = args.server or (f"localhost:{contract.DEFAULT_GRPC_PORT}" if args.protocol == "grpc"
                             else f"localhost:{contract.DEFAULT_REST_PORT}")
    try:
        analyzer = FaceAnalyzer.from_server(server, protocol=args.protocol,
                                            model_name=args.model_name, timeout=args.timeout,
                                            version=args.model_version,
                                            max_image_pixels=args.max_image_pixels)
    except AnalyzerError as e:  # an address that is not host:port
        p.error(str(e))
    status = 0
    drawn = set()
    ask = analyzer.analyze_batch if args.photos else analyzer.estimate_crops
    try:
        for start in range(0, len(args.images), args.batch_size):
            files = _read(args.images[start:start + args.batch_size])
            if files is None:
                return 2
            try:
                answers = ask([data for _, data in files], on_error="return")
            except ServerError as e:
                print(f"error: {args.protocol} {server}: {e}", file=sys.stderr)
                status = 1
                continue
            for (path, data), answer in zip(files, answers):
                if isinstance(answer, ImageError):
                    print(f"error: {args.protocol} {server}: {path}: {answer}", file=sys.stderr)
                    status = 1
                elif args.photos:
                    _print_photo(path, data, answer, args, drawn)
                else:
                    print(prediction_line.answer_line(path, answer))
    finally:
        analyzer.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
