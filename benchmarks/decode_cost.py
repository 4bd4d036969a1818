"""What issue 23's costly files cost TensorFlow's decoders, and what refusing them costs.

  .venv/bin/python -m benchmarks.decode_cost [--scan_counts=6,100,1000]

Prints, in CPU seconds of this process: `image_header.check` on issue 23's scan bomb (a
7000x7000 grey progressive JPEG, its last scan repeated 5,000 times); TensorFlow's decode of
a 2048x2048 grey progressive JPEG at each of `--scan_counts` scans (the decode of the bomb
itself would take minutes: the per-scan cost is what grows); the check and the decode of a
1x1 PNG with 1 GiB of extra image data, of one with 1,000 zTXt chunks of 7 MB, of a
12 MP noise PNG (the bounded inflate's cost on a real file) and of a GIF of 1.1 million
frames; and the
peak memory of reading a zip member of 2,097,152,000 zeros whose headers declare 1,000
bytes (`image_sources.iter_archive`). The files are built in memory
(`testing.hostile_files`). Figures: docs/limits.md.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import io
import os
import resource
import tempfile
import time

from agegender import console, image_header
from testing import hostile_files


def _cpu(fn):
    """(CPU seconds, result) of fn(); a ValueError (the check's refusals) is the result."""
    start = time.process_time()
    try:
        result = fn()
    except ValueError as e:
        result = e
    return time.process_time() - start, result


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def zip_member(out):
    from agegender import image_sources as sources

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "faces.zip")
        with open(path, "wb") as f:
            f.write(hostile_files.zip_with_false_size({}, 2_097_152_000, 1000))
        before = _rss_mb()
        archive = sources.InputFile(path, "faces.zip", None, True)
        seconds, skips = _cpu(lambda: list(sources.iter_archive(archive)))
        out(f"zip member of 2,097,152,000 zeros declaring 1,000 bytes "
            f"({os.path.getsize(path):,} bytes): {skips[0].reason} after {seconds:.2f} s; "
            f"peak RSS {before:.0f} -> {_rss_mb():.0f} MB")


def jpeg(out, scan_counts):
    import tensorflow as tf

    bomb = hostile_files.jpeg_scan_bomb(7000, 5000)
    seconds, refusal = _cpu(lambda: image_header.check(bomb))
    out(f"scan bomb 7000x7000, {len(bomb):,} bytes: check {type(refusal).__name__} in "
        f"{seconds:.4f} s")

    def decode(data):
        return tf.io.decode_image(data, channels=3, expand_animations=False)
    decode(hostile_files.jpeg_scan_bomb(64, 0))  # TF's start-up out of the figures
    for scans in scan_counts:
        data = hostile_files.jpeg_scan_bomb(2048, max(0, scans - 6))
        seconds, _ = _cpu(lambda: decode(data))
        out(f"2048x2048 grey progressive JPEG, {scans} scans: decode {seconds:.3f} s "
            f"({seconds / (2048 * 2048 * scans) * 1e9:.2f} ns per pixel per scan)")


def png_and_gif(out):
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), np.uint8)).save(
        noise, "PNG", compress_level=1)
    for name, data in (("1x1 PNG + 1 GiB of image data",
                        hostile_files.png_with_extra_data(1024)),
                       ("1x1 PNG + 1,000 zTXt chunks of 7 MB",
                        hostile_files.png_with_compressed_text(1000, 7_000_000)),
                       ("12 MP noise PNG (a real one)", noise.getvalue()),
                       ("GIF of 1,100,000 1x1 frames", hostile_files.gif_of_frames(1_100_000))):
        check_s, refusal = _cpu(lambda: image_header.check(data))
        decode_s, _ = _cpu(lambda: tf.io.decode_image(data, channels=3,
                                                      expand_animations=False))
        out(f"{name} ({len(data):,} bytes): check {type(refusal).__name__} in {check_s:.3f} s;"
            f" TF decode {decode_s:.2f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scan_counts", default="6,100,1000",
                   help="scans of the 2048x2048 JPEGs decoded (comma-separated)")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    try:
        scan_counts = [int(s) for s in args.scan_counts.split(",")]
    except ValueError:
        p.error(f"--scan_counts: {args.scan_counts!r} is not a comma-separated list of counts")
    if any(s < 6 for s in scan_counts):
        p.error("--scan_counts: at least 6 (the progressive file's own scans)")
    out = print
    zip_member(out)  # first: before TensorFlow, so the peak is the reading's
    jpeg(out, scan_counts)
    png_and_gif(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
