"""Face detection: recall, false positives, agreement with the mtcnn package, latency; and
with a trained model, the photo path's accuracy and its latency over gRPC.

    .venv/bin/python -m benchmarks.faces [--num_photos=200] [--crops=100] [--latency_photos=40] \
        [--seed=0] [--data_dir=../shared/data/utkface/UTKFace] [--min_face_sizes=20,40] \
        [--context=0.25] [--no_reference] [--job_dir=runs/x | --model=models/age] \
        [--mae_photos=200] [--mae_rotation=15] [--grpc_requests=100] \
        [--server_flags="--tensorflow_intra_op_parallelism=0"]

On synthetic photos (`testing.synthetic_faces`: test-split UTKFace faces of 40-300 px pasted
on varied 640x480 backgrounds, 1-4 per photo, each with --context x its side of surroundings
(its own border mirrored, fading into the background; 0: the hard-cut squares of earlier
runs); the same photos for the same --seed), side by side for our TF detector
(`faces.detector`, once per --min_face_sizes value) and the package's
`MTCNN().detect_faces`:

1. recall: a true face (>= 40 px) counts as found when a detection has IoU >= 0.5 with it
   (one to one); false positives per photo: detections matching no face. With --context
   > 0, again on the same photos hard-cut (context 0).
2. agreement of our detector (package settings: min_face_size 20) with the package, on the
   photos and on --crops test-split UTKFace crops: faces found by both / by one only, box
   IoU and largest landmark distance of the pairs.
3. latency per 640x480 photo with one face (p50/p90 over --latency_photos photos, after a
   warm-up; wall and CPU time, the machine may be shared: the load average is printed),
   for each detector, and for ours by stage (PNet pyramid; + RNet; + ONet = detect;
   + alignment of the faces = `faces.photo.PhotoFaces.faces`).

With a trained model (`--job_dir`: exported here with predict_photo; or `--model`: an
exported SavedModel that has it):

4. accuracy on photos: the MAE of predict_photo's answers for the faces of --mae_photos
   synthetic photos (a true face is answered by the detection matching it, IoU >= 0.5),
   beside the MAE of the same faces given as the dataset's crops to serving_default, by face
   size; and the photos' detection recall. With --context > 0, again on the same photos
   hard-cut (context 0), so both figures are printed.
5. latency of predict_photo per 640x480 photo with one face: in process (the signature
   called directly) and over gRPC through the local server (`python -m serving.server`,
   started here on 127.0.0.1 as benchmarks/serving.py does; one request at a time).
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import os
import sys
import time

import numpy as np

from agegender import arg_types, console
from testing.synthetic_faces import CONTEXT


def _percentiles(values, qs=(50, 90)):
    if not len(values):
        return [float("nan")] * len(qs)
    return [float(np.percentile(values, q)) for q in qs]


def _timed(fn, inputs, warmup=3):
    for x in inputs[:warmup]:
        fn(x)
    wall, cpu = [], []
    for x in inputs:
        t, c = time.perf_counter(), time.process_time()
        fn(x)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return np.asarray(wall) * 1000, np.asarray(cpu) * 1000


def recall_table(name, finders, photos):
    """Prints recall and false positives for each (label, find) in `finders`."""
    from faces import boxes as box_ops

    print(f"\n## 1. Recall and false positives: {len(photos)} synthetic photos, "
          f"{sum(len(p.boxes) for p in photos)} faces of 40-300 px ({name})")
    print(f"{'detector':<34} {'recall':>8} {'found/faces':>12} {'FP/photo':>9} "
          f"{'recall<60px':>12} {'recall>=60px':>13}")
    for label, find in finders:
        found = total = fp = small_found = small = 0
        for p in photos:
            m = box_ops.match(p.boxes, find(p.image).boxes, 0.5)
            sides = p.boxes[:, 2] - p.boxes[:, 0]
            found += int((m.pair >= 0).sum())
            total += len(p.boxes)
            fp += int(m.false_positive.sum())
            small += int((sides < 60).sum())
            small_found += int(((m.pair >= 0) & (sides < 60)).sum())
        big = total - small
        print(f"{label:<34} {found / total:>8.2%} {f'{found}/{total}':>12} "
              f"{fp / len(photos):>9.3f} {small_found / max(small, 1):>12.2%} "
              f"{(found - small_found) / max(big, 1):>13.2%}")


def agreement_table(ours, theirs, sets):
    from testing import reference_detector

    print("\n## 2. Agreement with mtcnn.MTCNN().detect_faces (our detector, package settings)")
    print(f"{'images':<28} {'both':>6} {'ours only':>10} {'theirs only':>12} {'IoU>=0.9':>9} "
          f"{'IoU min':>8} {'IoU p50':>8} {'landmarks p50/p99/max px':>26}")
    for name, images in sets:
        both = only_ours = only_theirs = 0
        ious, errors = [], []
        for image in images:
            a = reference_detector.compare(ours.find(image), theirs.find(image))
            both += a.matched
            only_ours += a.ours_only
            only_theirs += a.theirs_only
            ious += a.ious.tolist()
            errors += a.landmark_error.tolist()
        ious, errors = np.asarray(ious), np.asarray(errors)
        print(f"{name:<28} {both:>6} {only_ours:>10} {only_theirs:>12} "
              f"{(ious >= 0.9).mean() if len(ious) else float('nan'):>9.2%} "
              f"{ious.min() if len(ious) else float('nan'):>8.3f} "
              f"{np.median(ious) if len(ious) else float('nan'):>8.4f} "
              f"{np.median(errors):>10.2f}/{np.percentile(errors, 99):.2f}/{errors.max():.2f}")


def stage_functions(detector):
    """tf.functions running the cascade up to each stage (same ops as detect)."""
    import tensorflow as tf

    from faces import networks

    spec = [tf.TensorSpec([None, None, 3], tf.uint8)]

    def prepared(image):
        shape = tf.shape(image)
        pixels, _, _ = detector._detection_image(image, shape[0], shape[1])
        return networks.normalize(pixels)

    @tf.function(input_signature=spec, autograph=False)
    def pyramid(image):
        return tf.shape(detector._propose(prepared(image))[0])[0]

    @tf.function(input_signature=spec, autograph=False)
    def refine(image):
        normalized = prepared(image)
        return tf.shape(detector._refine(normalized, detector._propose(normalized)[0])[0])[0]

    return pyramid, refine


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_photos", "--photos", dest="photos", type=int, default=200)
    parser.add_argument("--crops", type=int, default=100)
    parser.add_argument("--latency_photos", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None, help="UTKFace crops (default: ../shared)")
    parser.add_argument("--min_face_sizes", default="20,40",
                        help="our detector's min_face_size values to compare")
    parser.add_argument("--context", type=float, default=CONTEXT,
                        help="surroundings of each pasted face, as a fraction of its side "
                             f"(testing.synthetic_faces; default {CONTEXT}; 0: hard-cut squares)")
    parser.add_argument("--no_reference", action="store_true",
                        help="skip the mtcnn package (recall and latency of ours only)")
    parser.add_argument("--job_dir", default=None,
                        help="a trained job dir: exported (with predict_photo) for 4. and 5.")
    parser.add_argument("--model", default=None,
                        help="or an exported model (base path or version dir) with "
                             "predict_photo")
    parser.add_argument("--mae_photos", type=int, default=200)
    parser.add_argument("--mae_rotation", type=float, default=15.0,
                        help="largest rotation of the faces pasted in 4.'s photos (degrees)")
    parser.add_argument("--grpc_requests", type=int, default=100)
    parser.add_argument("--server_flags", default="",
                        help="extra flags for the local server (space separated)")
    parser.add_argument("--skip_detection", action="store_true",
                        help="only 4. and 5. (the model's sections)")
    console.add_verbose_flag(parser)
    argv = sys.argv[1:] if argv is None else argv
    arg_types.warn_renamed(argv, {"--photos": "--num_photos"})
    args = parser.parse_args(argv)
    if not 0 <= args.context <= 1:
        parser.error(f"--context={args.context}: a fraction of the face's side from 0 to 1")

    from faces import detector as detector_lib
    from faces import photo as photo_lib
    from faces import utkface
    from testing import synthetic_faces

    data_dir = args.data_dir or utkface.SHARED_UTKFACE
    if not os.path.isdir(data_dir):
        print(f"no UTKFace crops in {data_dir} (--data_dir)", file=sys.stderr)
        return 2
    print(f"# benchmarks.faces  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t0 = time.time()
    photos = list(synthetic_faces.photos(args.photos, args.seed, data_dir=data_dir,
                                         context=args.context))
    single = list(synthetic_faces.photos(args.latency_photos, args.seed + 1, data_dir=data_dir,
                                         faces_per_photo=(1, 1), context=args.context))
    paths = utkface.list_files(data_dir)
    order = np.random.default_rng(args.seed + 2).permutation(len(paths))
    crops = []
    for _, pixels in utkface.Crops(paths).in_split("test", order):
        if len(crops) >= args.crops:
            break
        crops.append(pixels)
    print(f"(photos built in {time.time() - t0:.0f} s)")
    if args.skip_detection:
        return model_sections(args, data_dir, single, t0)

    sizes = [float(s) for s in args.min_face_sizes.split(",") if s]
    ours = {s: detector_lib.FaceDetector(detector_lib.DetectorConfig(min_face_size=s))
            for s in sizes}
    package_settings = ours.get(20.0) or detector_lib.FaceDetector()
    finders = [(f"ours, min_face_size {s:g}", d.find) for s, d in ours.items()]
    reference = None
    if not args.no_reference:
        from testing.reference_detector import Reference

        reference = Reference()
        finders.append(("mtcnn package detect_faces", reference.find))
    recall_table(f"faces >= 40 px, context {args.context:g}", finders, photos)
    if args.context:  # the same photos hard-cut, as earlier runs measured them
        recall_table("faces >= 40 px, context 0 (hard-cut)", finders,
                     list(synthetic_faces.photos(args.photos, args.seed, data_dir=data_dir)))
    if reference:
        agreement_table(package_settings, reference,
                        [(f"{len(photos)} synthetic photos", [p.image for p in photos]),
                         (f"{len(crops)} UTKFace test crops", crops)])

    images = [p.image for p in single]
    rows = []
    for s, d in ours.items():
        pyramid, refine = stage_functions(d)
        aligned = photo_lib.PhotoFaces(128, detector=d)
        rows += [
            (f"ours {s:g}: PNet pyramid + proposals", lambda x, f=pyramid: f(x).numpy()),
            (f"ours {s:g}: + RNet", lambda x, f=refine: f(x).numpy()),
            (f"ours {s:g}: + ONet = detect", lambda x, d=d: d.detect(x)["num_faces"].numpy()),
            (f"ours {s:g}: detect_bytes (JPEG decode + detect)",
             lambda x, d=d: d.detect_bytes(x)["num_faces"].numpy()),
            (f"ours {s:g}: + align 128 px (PhotoFaces.faces)",
             lambda x, a=aligned: a.faces(x)["crops"].numpy()),
        ]
    if reference:
        rows.append(("mtcnn package detect_faces", reference.find))
    _latency_rows(rows, images, [_jpeg(x) for x in images])
    return model_sections(args, data_dir, single, t0)


def model_sections(args, data_dir, single, t0):
    """4. and 5. when a model is given; then the closing line."""
    if args.job_dir or args.model:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench_faces_") as tmp:
            model = _photo_model(args, tmp)
            for context in dict.fromkeys([args.context, 0.0]):  # and hard-cut, to compare
                mae_table(model, data_dir, args.mae_photos, args.seed + 3, args.mae_rotation,
                          context)
            grpc_latency(model, single, args.grpc_requests, args.server_flags.split())
    else:
        print("\n(4. and 5. need a trained model: --job_dir or --model)")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; {time.time() - t0:.0f} s in all")
    return 0


def _photo_model(args, tmp):
    """A SavedModel version dir with predict_photo: --model, or --job_dir exported into tmp."""
    from evaluation import runners
    from export import export_model

    if args.model:
        return runners.resolve_saved_model(args.model)
    start = time.time()
    path = export_model.export_saved_model(args.job_dir, os.path.join(tmp, "age"))
    print(f"\n(exported {args.job_dir} with predict_photo in {time.time() - start:.0f} s)")
    return path


def mae_table(model_dir, data_dir, count, seed, max_rotation=15.0, context=0.0):
    """4. MAE of predict_photo on synthetic photos vs the same faces as crops (and the crops
    themselves sent to predict_photo: what alignment alone changes)."""
    import tensorflow as tf

    from agegender import names, photo_answers
    from agegender import serving_contract as contract
    from faces import boxes as box_ops
    from testing import synthetic_faces

    loaded = tf.saved_model.load(model_dir)
    photo_fn = loaded.signatures[contract.PREDICT_PHOTO]
    crop_fn = loaded.signatures[contract.SERVING_DEFAULT]
    none = tf.constant([], tf.string)
    rows = []  # (side, true age, photo answer or nan, crop answer, crop via predict_photo)
    photos = list(synthetic_faces.photos(count, seed, data_dir=data_dir,
                                         max_rotation=max_rotation, context=context))
    for photo in photos:
        out = photo_fn(image_bytes=tf.reshape(_jpeg(photo.image), [1]), key=none)
        n = int(out[contract.NUM_FACES][0])
        match = box_ops.match(photo.boxes, out[contract.BOXES][0, :n].numpy(), 0.5)
        crops = [open(source, "rb").read() for source in photo.sources]
        crop_ages = crop_fn(image_bytes=tf.constant(crops), key=none)["age"].numpy()
        # The crop itself as a photo: its largest face found, aligned (nan if none).
        as_photos = photo_answers.photo_faces(
            {k: v.numpy() for k, v in photo_fn(image_bytes=tf.constant(crops), key=none).items()})
        ages = out["age"][0].numpy()
        for i, source in enumerate(photo.sources):
            found = match.pair[i]
            faces = as_photos[i]["faces"]
            largest = photo_answers.largest_face(faces)
            rows.append((float(photo.boxes[i, 2] - photo.boxes[i, 0]),
                         names.parse_name(source).age,
                         float(ages[found]) if found >= 0 else float("nan"),
                         float(crop_ages[i]),
                         float("nan") if largest is None else faces[largest]["age"]))
    rows = np.asarray(rows)
    print(f"\n## 4. Age MAE on {len(photos)} synthetic photos ({len(rows)} faces, 40-300 px, "
          f"rotated up to {max_rotation:g} degrees, context {context:g}"
          f"{' (hard-cut)' if not context else ''}) vs the same faces as the dataset's crops")
    print(f"{'faces':<26} {'found':>7} {'MAE photo':>10} {'MAE crop':>9} {'photo-crop':>11}")
    for label, mask in (("all", rows[:, 0] > 0), ("40-59 px", rows[:, 0] < 60),
                        ("60-119 px", (rows[:, 0] >= 60) & (rows[:, 0] < 120)),
                        (">= 120 px", rows[:, 0] >= 120)):
        part = rows[mask]
        found = part[~np.isnan(part[:, 2])]
        if not len(found):
            continue
        photo_mae = np.abs(found[:, 2] - found[:, 1]).mean()
        crop_mae = np.abs(found[:, 3] - found[:, 1]).mean()
        print(f"{label:<26} {len(found):>4}/{len(part):<3}{photo_mae:>9.2f} {crop_mae:>9.2f} "
              f"{photo_mae - crop_mae:>+11.2f}")
    aligned = rows[~np.isnan(rows[:, 4])]
    print("(found: faces answered by a detection with IoU >= 0.5; both MAEs over those faces; "
          f"the crops' MAE over all {len(rows)}: {np.abs(rows[:, 3] - rows[:, 1]).mean():.2f}; "
          f"the crops sent to predict_photo whole ({len(aligned)} with a face found): "
          f"{np.abs(aligned[:, 4] - aligned[:, 1]).mean():.2f} vs "
          f"{np.abs(aligned[:, 3] - aligned[:, 1]).mean():.2f} through serving_default)")


def grpc_latency(model_dir, single, requests, server_flags):
    """5. predict_photo per photo: in process, and over gRPC through the local server."""
    import shutil
    import tempfile

    import tensorflow as tf

    from agegender import serving_contract as contract
    from serving.server_process import ServerProcess
    from serving.client import GrpcClient

    jpegs = [_jpeg(p.image).numpy() for p in single]
    loaded = tf.saved_model.load(model_dir)
    fn = loaded.signatures[contract.PREDICT_PHOTO]
    none = tf.constant([], tf.string)
    inputs = [jpegs[i % len(jpegs)] for i in range(requests)]
    in_process = _timed(lambda b: fn(image_bytes=tf.constant([b]), key=none), inputs)
    base = tempfile.mkdtemp(prefix="bench_faces_server_")
    server = None
    try:
        shutil.copytree(model_dir, os.path.join(base, "1"))
        server = ServerProcess(base, flags=server_flags).start(timeout=300)
        client = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=60)
        found = []

        def call(b):
            found.append(client.predict_photos([b])[0]["num_faces"])
        over_grpc = _timed(call, inputs)
        client.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n## 5. predict_photo latency per 640x480 photo with one face ({requests} requests, "
          f"one at a time, ms; server flags: {' '.join(server_flags) or 'defaults'})")
    print(f"{'path':<40} {'wall p50':>9} {'wall p90':>9} {'CPU p50':>8}")
    for label, (wall, cpu) in (("in process (the signature)", in_process),
                               ("gRPC, local server", over_grpc)):
        (w50, w90), (c50,) = _percentiles(wall), _percentiles(cpu, (50,))
        print(f"{label:<40} {w50:>9.1f} {w90:>9.1f} {c50:>8.1f}")
    print(f"(faces found per photo over gRPC: {np.bincount(found).tolist()} for 0, 1, ...; "
          "CPU over gRPC is the client's only)")


def _jpeg(pixels):
    import tensorflow as tf

    return tf.constant(tf.io.encode_jpeg(pixels, quality=90).numpy())


def _latency_rows(rows, images, jpegs):
    print(f"\n## 3. Latency per 640x480 photo with one face ({len(images)} photos, ms)")
    print(f"{'what':<52} {'wall p50':>9} {'wall p90':>9} {'CPU p50':>8} {'CPU p90':>8}")
    for label, fn in rows:
        inputs = jpegs if "detect_bytes" in label else images
        wall, cpu = _timed(fn, inputs)
        (w50, w90), (c50, c90) = _percentiles(wall), _percentiles(cpu)
        print(f"{label:<52} {w50:>9.1f} {w90:>9.1f} {c50:>8.1f} {c90:>8.1f}")


if __name__ == "__main__":
    sys.exit(main())
