"""Flood probe of the web page in front of the model server: does a normal client still get
its faces while the page is attacked?

  .venv/bin/python -m benchmarks.flood_web --model=models/age [--duration=60]
  .venv/bin/python -m benchmarks.flood_web --server=127.0.0.1:8501 ...   # a running server

Starts `python -m serving.server` on `--model` (unless `--server` names a running one) and
`python -m web.app` in front of it, both on 127.0.0.1. A normal client posts one photo (a
UTKFace test-split face pasted on a background by `testing.synthetic_faces`, or `--photo`) through
the page every `--interval` seconds: first alone (`--baseline` seconds), then for
`--duration` seconds while
- `--slowloris` connections (64) each send `POST /api/predict HTTP/1.1`, `Host: x`, then one
  header line every `--trickle` seconds (10), reconnecting as soon as the page closes them;
- `--flooders` clients (4) post, back to back, a 7000x7000 progressive JPEG whose last scan
  is repeated 5,000 times (issue 23) and a 1-bit PNG at the page's pixel limit (50 MP,
  ~6 KB that decode to 50 MB and cost seconds of CPU).
Then `--big_uploads` clients (30) post a ~12 MB JPEG (noise, just under the page's default
`--max_request_bytes`) at the same instant: the page's memory at its upload-bytes budget.
Prints, per phase, the normal client's requests, answers with a face, median / p90 / max
latency, what the flood got back (statuses), how often the slow connections were closed,
and the page's and the server's peak RSS (VmHWM) after the flood and after the big uploads. Everything stays on loopback, every
phase is bounded in time, and the children are stopped by their pid. Not a test: the
figures depend on the machine and on what else runs.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import collections
import http.client
import io
import json
import math
import socket
import statistics
import sys
import threading
import time

from agegender import console
from serving.server_process import ChildProcess, ServerProcess, free_port

PIXEL_LIMIT = 50_000_000  # the page's and the server's default --max_image_pixels


def normal_photo(path=None, seed=7):
    """JPEG bytes of one photo with one face."""
    if path:
        with open(path, "rb") as f:
            return f.read()
    from PIL import Image

    from testing import synthetic_faces

    (photo,) = synthetic_faces.photos(1, seed, faces_per_photo=(1, 1), face_sizes=(120, 160),
                                      max_rotation=5)
    out = io.BytesIO()
    Image.fromarray(photo.image).save(out, "JPEG", quality=92)
    return out.getvalue()


def scan_bomb(side=7000, repeats=5000):
    """A grey progressive JPEG with its last scan repeated: seconds to minutes to decode."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (side, side), 128).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + data[-2:]


def png_at_limit(pixels=PIXEL_LIMIT):
    from PIL import Image

    side = math.isqrt(pixels)
    out = io.BytesIO()
    Image.new("1", (side, side), 0).save(out, "PNG", optimize=True)
    return out.getvalue()


def big_jpeg(limit):
    """A JPEG of noise just under `limit` bytes (quality 100 keeps noise near 2 bytes/px)."""
    import numpy as np
    from PIL import Image

    side = int((limit / 2.05) ** 0.5)
    while True:
        pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=100)
        if out.tell() <= limit:
            return out.getvalue()
        side = int(side * 0.97)


def post(address, body, timeout=60):
    """-> (status or an error's name, seconds, parsed JSON or None)."""
    host, port = address
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/api/predict", body=body,
                     headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        raw = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__, time.monotonic() - start, None
    finally:
        conn.close()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    return status, time.monotonic() - start, payload


class Phase:
    """What the normal client saw in one phase."""

    def __init__(self, name):
        self.name = name
        self.latencies, self.ok, self.statuses = [], 0, collections.Counter()

    def add(self, status, seconds, payload):
        self.latencies.append(seconds)
        self.statuses[status] += 1
        if status == 200 and payload and payload.get("faces"):
            self.ok += 1

    def line(self):
        lat = sorted(self.latencies) or [float("nan")]
        p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))]
        return (f"{self.name:<9} requests {len(self.latencies):4d}  with a face {self.ok:4d}  "
                f"median {statistics.median(lat):6.3f} s  p90 {p90:6.3f} s  "
                f"max {lat[-1]:6.3f} s  statuses {dict(self.statuses)}")


def normal_client(address, photo, interval, until, phase):
    while time.monotonic() < until:
        started = time.monotonic()
        phase.add(*post(address, photo))
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def slowloris(address, trickle, stop, closed):
    """One attacker: a request that never ends, reconnected each time it is closed."""
    while not stop.is_set():
        try:
            with socket.create_connection(address, timeout=5) as s:
                s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\n")
                s.settimeout(trickle)
                n = 0
                while not stop.is_set():
                    try:
                        data = s.recv(4096)
                    except socket.timeout:
                        s.sendall(f"X-Slow-{n}: {n}\r\n".encode())
                        n += 1
                        continue
                    if not data:
                        break
                    closed[data.split(b" ", 2)[1].decode(errors="replace")
                           if data.startswith(b"HTTP/") else "closed"] += 1
                    break
        except OSError as e:
            closed[type(e).__name__] += 1
            stop.wait(0.05)


def flooder(address, bodies, stop, statuses):
    i = 0
    while not stop.is_set():
        kind, body = bodies[i % len(bodies)]
        status, _, _ = post(address, body, timeout=30)
        statuses[f"{kind} {status}"] += 1
        i += 1


def print_peaks(when, page, server):
    line = f"{when}: page peak RSS {page.memory()['VmHWM'] / 1024:.0f} MB"
    if server is not None:
        line += f", server peak RSS {server.memory()['VmHWM'] / 1024:.0f} MB"
    print(line, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="SavedModel base dir (<dir>/<version>/) to serve")
    p.add_argument("--server", help="HOST:PORT of a running TF Serving REST API instead")
    p.add_argument("--model_name", default="age")
    p.add_argument("--input", help="the normal client's photo (default: a synthetic one)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of flood")
    p.add_argument("--baseline", type=float, default=15.0, help="seconds without flood first")
    p.add_argument("--interval", type=float, default=0.5, help="normal client's period, s")
    p.add_argument("--slowloris", type=int, default=64)
    p.add_argument("--trickle", type=float, default=10.0,
                   help="seconds between a slow connection's header lines")
    p.add_argument("--flooders", type=int, default=4)
    p.add_argument("--big_uploads", type=int, default=30,
                   help="simultaneous ~12 MB uploads after the flood (0: none)")
    p.add_argument("--page_flags", default="", help="extra flags for web.app, space-separated")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    if not args.model and not args.server:
        p.error("--model or --server is required")

    photo = normal_photo(args.input)
    bodies = [("scan-bomb", scan_bomb()), ("png-50MP", png_at_limit())]
    print(f"normal photo {len(photo)} bytes; flood bodies: "
          + ", ".join(f"{k} {len(b)} bytes" for k, b in bodies), flush=True)

    server = None
    if args.server:
        backend = args.server
    else:
        server = ServerProcess(args.model, args.model_name).start(timeout=600)
        backend = server.rest_address
    page_port = free_port()
    page = ChildProcess([sys.executable, "-m", "web.app", f"--server={backend}",
                         f"--model_name={args.model_name}", f"--port={page_port}",
                         *args.page_flags.split()], "page: ", name="the page").start()
    address = ("127.0.0.1", page_port)
    try:
        post(address, photo)  # the model's first call
        baseline = Phase("alone")
        normal_client(address, photo, args.interval, time.monotonic() + args.baseline, baseline)
        print(baseline.line(), flush=True)

        stop = threading.Event()
        closed, flood_statuses = collections.Counter(), collections.Counter()
        threads = [threading.Thread(target=slowloris, args=(address, args.trickle, stop, closed),
                                    daemon=True) for _ in range(args.slowloris)]
        threads += [threading.Thread(target=flooder, args=(address, bodies, stop, flood_statuses),
                                     daemon=True) for _ in range(args.flooders)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the slow connections are in
        flood = Phase("flooded")
        normal_client(address, photo, args.interval, time.monotonic() + args.duration, flood)
        stop.set()
        for t in threads:
            t.join(35)
        print(flood.line())
        print(f"flood answers: {dict(flood_statuses)}")
        print(f"slow connections closed by the page: {dict(closed)}")
        print_peaks("after the flood", page, server)
        if args.big_uploads:
            from web.app import DEFAULT_MAX_REQUEST_BYTES

            body = big_jpeg(DEFAULT_MAX_REQUEST_BYTES)
            statuses = collections.Counter()
            barrier = threading.Barrier(args.big_uploads)

            def upload():
                barrier.wait(30)
                statuses[post(address, body, timeout=120)[0]] += 1

            uploaders = [threading.Thread(target=upload) for _ in range(args.big_uploads)]
            for t in uploaders:
                t.start()
            for t in uploaders:
                t.join(180)
            print(f"{args.big_uploads} simultaneous uploads of {len(body):,} bytes: "
                  f"{dict(statuses)}")
            print_peaks("after the big uploads", page, server)
    finally:
        page.stop()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
