"""The predict command: face images or photos in, one line per face out, from any model the
Python API loads (a SavedModel, a trainer job dir, a .tflite file, or TF Serving).

    python -m analyzer.predict --model=models/age face.jpg more_faces/        # aligned crops
    python -m analyzer.predict --model=runs/age --photos photos/ --draw_dir=drawn
    python -m analyzer.predict --server=localhost:8500 --photos group.jpg     # TF Serving, gRPC
    python -m analyzer.predict --server=localhost:8501 --protocol=rest face.jpg

Each input is a file, a directory (every file below it), a glob or an archive, listed and
read as the records job lists them (`agegender.image_sources`: links, FIFOs and devices
skipped unless --follow_symlinks, archive members counted as they are inflated, the header
checked before any decode). A line per image: "face.jpg: Predicted age: 31.2 ± 5 (80%:
25-38), true age: 34, ..." (the true values from a UTKFace-style name); with --photos, a line
per face found and "no face found" for a photo without one. An input that cannot be read is
one line on stderr with its reason, and the exit status is 1; the other inputs are answered.

`serving.client` is this command with a server as its default model.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import os
import sys

from agegender import (arg_types, console, image_header, image_sources, labelled_inputs,
                       prediction_line)
from agegender import serving_contract as contract
from agegender.errors import AnalyzerError, ImageError, ServerError
from analyzer.face_analyzer import FaceAnalyzer


def _any_labels(source_id):
    """Every name is welcome (predict needs no label); `check` still reads the header."""
    return None


def iter_inputs(specs, follow_symlinks, max_pixels):
    """(source, bytes) or (source, skip reason and detail) for every input the specs name,
    in order: a file as named, a directory / glob / archive through the records job's listing."""
    for spec in specs:
        if os.path.isfile(spec) and not image_sources.is_archive(spec):
            # A file named on the command line is read through a link, as any command
            # reads the files it is given; links found inside folders follow the flag.
            yield spec, _read_named(spec, follow_symlinks=True)
            continue
        try:
            items = list(labelled_inputs.iter_labelled(spec, _any_labels, follow_symlinks,
                                                       max_pixels))
        except image_sources.InputError as e:
            yield spec, image_sources.Skip(spec, image_sources.UNREADABLE, str(e))
            continue
        for item in items:
            if isinstance(item, image_sources.Skip):
                yield item.source_id, item
            else:
                yield item.source_id, item.data


def _read_named(path, follow_symlinks):
    try:
        return image_sources.read_file(path, image_sources.MAX_INPUT_BYTES, follow_symlinks)
    except image_sources.NotARegularFile as e:
        return image_sources.Skip(path, image_sources.NOT_A_REGULAR_FILE, e.strerror)
    except image_sources.InputTooLarge as e:
        return image_sources.Skip(path, image_sources.FILE_TOO_LARGE, e.strerror)
    except OSError as e:
        return image_sources.Skip(path, image_sources.UNREADABLE, image_sources.short_error(e))


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


def parser(default_server=False):
    p = argparse.ArgumentParser(
        prog="python -m serving.client" if default_server else "python -m analyzer.predict",
        description="Predict the age (and gender) of every face in images or photos.")
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="JPEG/PNG/... files, directories, globs or archives")
    p.add_argument("--model", default=None,
                   help="a SavedModel (version or base dir), a trainer job dir, a .tflite file, "
                        "or grpc://HOST:PORT / http://HOST:PORT")
    p.add_argument("--server", default=None,
                   help="TF Serving's HOST:PORT (default with no --model: localhost:8500 for "
                        "gRPC, localhost:8501 for REST)" if default_server else
                        "TF Serving's HOST:PORT, instead of --model")
    p.add_argument("--protocol", choices=("grpc", "rest"), default="grpc",
                   help="with --server (default %(default)s)")
    p.add_argument("--model_name", default=contract.DEFAULT_MODEL_NAME,
                   help="with --server (default %(default)s)")
    p.add_argument("--model_version", type=int, default=None, help="with --server")
    p.add_argument("--batch_size", type=arg_types.positive(int, "a count"), default=16,
                   help="images per model call (default %(default)s)")
    p.add_argument("--timeout", type=arg_types.positive(float, "seconds"), default=10.0,
                   help="with --server: seconds per request (default %(default)s)")
    arg_types.add_max_image_pixels(p, image_header.DEFAULT_MAX_PIXELS)
    p.add_argument("--follow_symlinks", action="store_true",
                   help="follow links inside directories and globs (skipped by default)")
    p.add_argument("--photos", action="store_true",
                   help="the images are ordinary photos: find the faces in them (the model's "
                        "predict_photo signature) and print one line per face")
    p.add_argument("--draw_dir", default=None,
                   help="with --photos: write a copy of each photo with its faces' boxes and "
                        "ages drawn on it into this directory")
    console.add_verbose_flag(p)
    return p


def _analyzer(p, args, default_server):
    if args.model and args.server:
        p.error("give --model or --server, not both")
    if not args.model and not args.server and not default_server:
        p.error("give --model (a model path or address) or --server=HOST:PORT")
    try:
        if args.model:
            return FaceAnalyzer.load(args.model, max_image_pixels=args.max_image_pixels), args.model
        server = args.server or (f"localhost:{contract.DEFAULT_GRPC_PORT}"
                                 if args.protocol == "grpc"
                                 else f"localhost:{contract.DEFAULT_REST_PORT}")
        analyzer = FaceAnalyzer.from_server(server, protocol=args.protocol,
                                            model_name=args.model_name, timeout=args.timeout,
                                            version=args.model_version,
                                            max_image_pixels=args.max_image_pixels)
        return analyzer, f"{args.protocol} {server}"
    except AnalyzerError as e:  # no such model, or an address that is not host:port
        p.error(str(e))


def main(argv=None, default_server=False):
    p = parser(default_server)
    args = p.parse_args(argv)
    if args.draw_dir and not args.photos:
        p.error("--draw_dir needs --photos")
    analyzer, where = _analyzer(p, args, default_server)
    status = 0
    drawn = set()
    ask = analyzer.analyze_batch if args.photos else analyzer.estimate_crops
    batch = []

    def answer(batch):
        nonlocal status
        try:
            answers = ask([data for _, data in batch], on_error="return")
        except ServerError as e:
            print(f"error: {where}: {e}", file=sys.stderr)
            status = 1
            return
        for (path, data), result in zip(batch, answers):
            if isinstance(result, ImageError):
                print(f"error: {where}: {path}: {result}", file=sys.stderr)
                status = 1
            elif args.photos:
                _print_photo(path, data, result, args, drawn)
            else:
                print(prediction_line.answer_line(path, result))

    try:
        for path, data in iter_inputs(args.images, args.follow_symlinks, args.max_image_pixels):
            if isinstance(data, image_sources.Skip):
                print(f"error: {path}: {data.reason}: {data.detail}", file=sys.stderr)
                status = 1
                continue
            batch.append((path, data))
            if len(batch) == args.batch_size:
                answer(batch)
                batch = []
        if batch:
            answer(batch)
    finally:
        analyzer.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
