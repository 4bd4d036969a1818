"""The Python API per backend: what one `analyze` costs, and what batching buys.

For each model given (`FaceAnalyzer.load` targets: a SavedModel, a job dir, a .tflite with
`--faces_dir`, a server address), on the same synthetic photos (test-split faces pasted on
backgrounds, `testing.synthetic_faces`) and their source crops:

  load           seconds to the analyzer (TensorFlow import excluded: done before)
  first photo    seconds of the first analyze (graph tracing, warm-up)
  photo median   median seconds of analyze(photo), one photo per call, after the first
  photos/s b=8   analyze_batch of 8 photos per call
  crops/s b=32   estimate_crops of 32 aligned crops per call
  faces          faces found over the photos (the same model on every backend finds the same)

`--serve=MODEL_BASE` also starts the local server (`serving.server`, in process, loopback)
on that SavedModel base and measures it over gRPC and REST.

    python -m benchmarks.python_api --model=models/age --model=models/age.tflite \
        --faces_dir=models/faces_litert --serve=models/age --num_photos=24
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import statistics
import sys
import time


from agegender import FaceAnalyzer, arg_types, console
from testing import synthetic_faces


def _encode(pixels):
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=92)
    return out.getvalue()


def measure(name, make, photos, crops):
    started = time.perf_counter()
    analyzer = make()
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    first = analyzer.analyze(photos[0])
    first_s = time.perf_counter() - started
    times, found = [], len(first)
    for photo in photos[1:]:
        started = time.perf_counter()
        found += len(analyzer.analyze(photo))
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    batches = [photos[i:i + 8] for i in range(0, len(photos), 8)]
    for batch in batches:
        analyzer.analyze_batch(batch)
    photo_rate = len(photos) / (time.perf_counter() - started)
    analyzer.estimate_crops(crops[:2])  # warm the crop path
    started = time.perf_counter()
    for i in range(0, len(crops), 32):
        analyzer.estimate_crops(crops[i:i + 32])
    crop_rate = len(crops) / (time.perf_counter() - started)
    analyzer.close()
    return (name, loaded, first_s, statistics.median(times), photo_rate, crop_rate, found)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="a FaceAnalyzer.load target; repeat for several")
    p.add_argument("--faces_dir", default=None, help="LiteRT face networks for .tflite models")
    p.add_argument("--serve", default=None,
                   help="a SavedModel base path to serve locally and measure over gRPC and REST")
    p.add_argument("--num_photos", "--photos", dest="photos", type=int, default=24, help="synthetic photos (>= 2)")
    p.add_argument("--seed", type=int, default=0)
    console.add_verbose_flag(p)
    argv = sys.argv[1:] if argv is None else argv
    arg_types.warn_renamed(argv, {"--photos": "--num_photos"})
    args = p.parse_args(argv)
    if args.photos < 2:
        p.error("--photos must be at least 2")
    made = list(synthetic_faces.photos(args.photos, args.seed, context=0.25))
    photos = [_encode(photo.image) for photo in made]
    crops = [open(source, "rb").read() for photo in made for source in photo.sources]
    crops = (crops * (1 + 64 // max(1, len(crops))))[:64]
    targets = []
    for model in args.model:
        options = {"faces_dir": args.faces_dir} if model.endswith(".tflite") else {}
        targets.append((model, lambda m=model, o=options: FaceAnalyzer.load(m, **o)))
    server = None
    if args.serve:
        from serving.server import ModelServer

        server = ModelServer(args.serve, "age", grpc_port=0, rest_port=0).start()
        for scheme, port in (("grpc", server.grpc_port), ("http", server.rest_port)):
            address = f"{scheme}://127.0.0.1:{port}"
            targets.append((f"{address} (local server)",
                            lambda a=address: FaceAnalyzer.load(a, timeout=120)))
    rows = []
    try:
        for name, make in targets:
            rows.append(measure(name, make, photos, crops))
            print(f"{name}: done", flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"\n{len(photos)} photos (640x480 JPEG, {sum(len(p.sources) for p in made)} faces "
          f"pasted), {len(crops)} crops\n")
    print("| model | load s | first photo s | photo median s | photos/s b=8 | crops/s b=32 "
          "| faces found |")
    print("|---|---|---|---|---|---|---|")
    for name, loaded, first, median, photo_rate, crop_rate, found in rows:
        print(f"| {name} | {loaded:.1f} | {first:.2f} | {median:.3f} | {photo_rate:.1f} | "
              f"{crop_rate:.0f} | {found} |")
    return rows


if __name__ == "__main__":
    main()
