"""Face detection: recall, false positives, agreement with the mtcnn package, latency.

    .venv/bin/python -m benchmarks.faces [--photos=200] [--crops=100] [--latency_photos=40] \
        [--seed=0] [--data_dir=../shared/data/utkface/UTKFace] [--min_face_sizes=20,40] \
        [--no_reference]

On synthetic photos (`faces.synthetic`: test-split UTKFace faces of 40-300 px pasted on
varied 640x480 backgrounds, 1-4 per photo; the same photos for the same --seed), side by
side for our TF detector (`faces.detector`, once per --min_face_sizes value) and the
package's `MTCNN().detect_faces`:

1. recall: a true face (>= 40 px) counts as found when a detection has IoU >= 0.5 with it
   (one to one); false positives per photo: detections matching no face.
2. agreement of our detector (package settings: min_face_size 20) with the package, on the
   photos and on --crops test-split UTKFace crops: faces found by both / by one only, box
   IoU and largest landmark distance of the pairs.
3. latency per 640x480 photo with one face (p50/p90 over --latency_photos photos, after a
   warm-up; wall and CPU time, the machine may be shared: the load average is printed),
   for each detector, and for ours by stage (PNet pyramid; + RNet; + ONet = detect;
   + alignment of the faces = `faces.photo.PhotoFaces.faces`).
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    from faces import reference

    print("\n## 2. Agreement with mtcnn.MTCNN().detect_faces (our detector, package settings)")
    print(f"{'images':<28} {'both':>6} {'ours only':>10} {'theirs only':>12} {'IoU>=0.9':>9} "
          f"{'IoU min':>8} {'IoU p50':>8} {'landmarks p50/p99/max px':>26}")
    for name, images in sets:
        both = only_ours = only_theirs = 0
        ious, errors = [], []
        for image in images:
            a = reference.compare(ours.find(image), theirs.find(image))
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
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--crops", type=int, default=100)
    parser.add_argument("--latency_photos", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None, help="UTKFace crops (default: ../shared)")
    parser.add_argument("--min_face_sizes", default="20,40",
                        help="our detector's min_face_size values to compare")
    parser.add_argument("--no_reference", action="store_true",
                        help="skip the mtcnn package (recall and latency of ours only)")
    args = parser.parse_args(argv)

    from faces import detector as detector_lib
    from faces import photo as photo_lib
    from faces import synthetic, utkface

    data_dir = args.data_dir or utkface.SHARED_UTKFACE
    if not os.path.isdir(data_dir):
        print(f"no UTKFace crops in {data_dir} (--data_dir)", file=sys.stderr)
        return 2
    print(f"# benchmarks.faces  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t0 = time.time()
    photos = list(synthetic.photos(args.photos, args.seed, data_dir=data_dir))
    single = list(synthetic.photos(args.latency_photos, args.seed + 1, data_dir=data_dir,
                                   faces_per_photo=(1, 1)))
    paths = utkface.list_files(data_dir)
    order = np.random.default_rng(args.seed + 2).permutation(len(paths))
    crops = []
    for _, pixels in utkface.Crops(paths).in_split("test", order):
        if len(crops) >= args.crops:
            break
        crops.append(pixels)
    print(f"(photos built in {time.time() - t0:.0f} s)")

    sizes = [float(s) for s in args.min_face_sizes.split(",") if s]
    ours = {s: detector_lib.FaceDetector(detector_lib.DetectorConfig(min_face_size=s))
            for s in sizes}
    package_settings = ours.get(20.0) or detector_lib.FaceDetector()
    finders = [(f"ours, min_face_size {s:g}", d.find) for s, d in ours.items()]
    reference = None
    if not args.no_reference:
        from faces.reference import Reference

        reference = Reference()
        finders.append(("mtcnn package detect_faces", reference.find))
    recall_table("faces >= 40 px", finders, photos)
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
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; {time.time() - t0:.0f} s in all")
    return 0


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
