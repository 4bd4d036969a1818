"""Shared fixtures for the Beam jobs' tests: synthetic images, bad inputs, running the job,
a real Dask cluster on loopback."""
import glob
import io
import json
import os
import signal
import subprocess
import sys
import time
import types
import zlib

import numpy as np
import pytest
from PIL import Image

from agegender import image_sources as sources
from agegender import names, schema
from pipeline import build_records, transforms

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_UTK = os.path.join(REPO, "..", "shared", "data", "utkface", "UTKFace")

# One in-process worker for tests: small inputs gain nothing from more, and the CLI's
# default (one worker process per core) pays seconds of start-up; it has its own test.
IN_PROCESS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def image_bytes(seed, size=(48, 40), mode="RGB", fmt="JPEG"):
    """A small noisy picture, different for every seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def write(directory, name, data):
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def run_build(input_spec, output_dir, *extra):
    """Runs the CLI in this process; returns (exit code, report dict or None)."""
    rc = build_records.main([f"--input={input_spec}", f"--output_dir={output_dir}",
                             *IN_PROCESS, *extra])
    report_path = os.path.join(output_dir, schema.REPORT_FILE)
    report = None
    if rc == 0:
        with open(report_path) as f:
            report = json.load(f)
    return rc, report


# Memory probes run the job in a child process with RLIMIT_DATA (heap and private mappings)
# at this size, so a regression fails the test instead of taking CI down. A healthy run of
# the job on a few small images needs about 0.6 GiB of it (TF and Beam loaded); RLIMIT_AS
# would not do: TF maps over 2.5 GiB of address space it never touches.
CHILD_DATA_LIMIT = int(1.5 * 2 ** 30)
# Thread pools sized by the core count would otherwise make the need grow with the machine.
# ARROW_DEFAULT_MEMORY_POOL: with pandas 3 installed, Beam's import builds pyarrow-backed
# dtypes, and pyarrow's default (jemalloc) pool then reserves ~1 GiB of address space it
# never touches; RLIMIT_DATA counts that reservation (0.2 GiB with the system allocator).
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": "2",
             "TF_NUM_INTEROP_THREADS": "2", "OMP_NUM_THREADS": "2",
             "ARROW_DEFAULT_MEMORY_POOL": "system"}


def run_cli_limited(argv, data_limit=CHILD_DATA_LIMIT, timeout=240, prelude=""):
    """Runs build_records.main(argv) (in-process runner) in a child under a memory limit.

    prelude: Python run in the child first (e.g. to make it stop at a given point).
    Returns the CompletedProcess; a run killed by the timeout has returncode None.
    """
    # The child limits itself first (no preexec_fn: it would fork this process, whose Beam
    # and gRPC threads' fork handlers can abort the child; serving.server_process says more).
    script = (f"import resource, sys\n"
              f"resource.setrlimit(resource.RLIMIT_DATA, ({data_limit}, {data_limit}))\n"
              f"{prelude}\nfrom pipeline import build_records\n"
              f"sys.exit(build_records.main({[*argv, *IN_PROCESS]!r}))\n")
    try:
        return subprocess.run([sys.executable, "-c", script], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": REPO, **CHILD_ENV},
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, None, e.stdout, e.stderr)


def png_header_bomb(width, height, mark=0):
    """A valid 1-bit grayscale PNG of width x height, all black but for one pixel row `mark`.

    A few kilobytes per 10 megapixels (zero rows compress ~1000:1), but decoded to RGB it
    is width x height x 3 bytes.
    """
    def chunk(kind, data):
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    row_bytes = (width + 7) // 8
    z = zlib.compressobj(9)
    zero_row, idat = b"\0" * (1 + row_bytes), []
    for y in range(height):
        idat.append(z.compress(zero_row if y != mark else b"\0" + b"\xff" * row_bytes))
    idat.append(z.flush())
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat))
            + chunk(b"IEND", b""))


def shard_files(output_dir):
    """{shard file name: bytes} of every shard in a records directory."""
    return {os.path.basename(p): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(output_dir, "*.tfrecord-*")))}


def read_records(output_dir, split):
    """Every record of one split, parsed with schema.FEATURE_SPEC, as a list of dicts."""
    import tensorflow as tf

    paths = sorted(tf.io.gfile.glob(schema.shard_pattern(output_dir, split)))
    records = []
    for serialized in tf.data.TFRecordDataset(paths):
        parsed = schema.parse_examples(serialized)
        records.append({k: v.numpy() for k, v in parsed.items()})
    return records


def skipped_by_source(report):
    return {s["source_id"]: s["reason"] for s in report["skipped"]}


# Name -> expected outcome (None: written; else the skip reason). Built by `bad_inputs`.
DATE = "20170101000000"
GOOD = {f"{20 + i}_{i % 2}_{i % 5}_{DATE}{i:03d}.jpg.chip.jpg": None for i in range(16)}


@pytest.fixture
def bad_inputs(tmp_path):
    """A directory with every kind of bad input next to good ones: (dir, {name: outcome})."""
    d = tmp_path / "faces"
    d.mkdir()
    expected = {}

    def add(name, data, outcome):
        write(str(d), name, data)
        expected[name] = outcome

    for i, name in enumerate(GOOD):
        add(name, image_bytes(i), None)
    good = image_bytes(100)
    add(f"30_0_0_{DATE}100.jpg.chip.jpg", b"", sources.EMPTY_FILE)
    add(f"31_0_0_{DATE}101.jpg.chip.jpg", good[:len(good) // 2], sources.UNDECODABLE)
    add(f"32_0_0_{DATE}102.jpg", b"this is a text file, not a picture\n", sources.UNDECODABLE)
    add(f"33_1_2_{DATE}103.png", image_bytes(103, mode="RGBA", fmt="PNG"), None)
    add(f"34_0_3_{DATE}104.jpg", image_bytes(104, mode="L"), None)
    add(f"35_1_4_{DATE}105.jpg", image_bytes(105, mode="CMYK"), None)
    add("face.jpg", image_bytes(106), names.BAD_NAME)
    add(f"36_1_{DATE}.jpg", image_bytes(107), None)  # race missing (UTKFace quirk)
    add(f"x_1_2_{DATE}108.jpg", image_bytes(108), names.BAD_AGE)
    add(f"37_m_2_{DATE}109.jpg", image_bytes(109), names.BAD_GENDER)
    add(f"38_3_2_{DATE}110.jpg", image_bytes(110), names.BAD_GENDER)  # gender 3
    add(f"0_0_0_{DATE}111.jpg", image_bytes(111), None)  # age 0: valid
    add(f"116_1_0_{DATE}112.jpg", image_bytes(112), None)  # age 116: valid
    add(f"117_1_0_{DATE}113.jpg", image_bytes(113), names.AGE_OUT_OF_RANGE)
    add(f"24_0_1_{DATE}114", image_bytes(114), None)  # no extension (UTKFace quirk)
    add("1234_57_0.jpg", image_bytes(115), None)  # the seed's renamed files
    add(f"sub/45_1_1_{DATE}116.jpg", image_bytes(116), None)  # below a subdirectory
    # Pixel-identical copies with the same labels: the smallest source id is kept. The PNG
    # holds the same pixels as the JPEG decodes to, so it is a copy despite other bytes.
    dup = image_bytes(200)
    add(f"40_0_0_{DATE}200.jpg", dup, None)
    add(f"40_0_0_{DATE}201.jpg", dup, transforms.DUPLICATE)
    import tensorflow as tf
    pixels = tf.io.decode_jpeg(dup).numpy()
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    add(f"40_0_1_{DATE}202.png", png.getvalue(), transforms.DUPLICATE)  # race differs: fine
    # Copies whose labels disagree: all dropped.
    conflict = image_bytes(300)
    add(f"50_1_0_{DATE}300.jpg", conflict, transforms.CONFLICTING_LABELS)
    add(f"53_1_0_{DATE}301.jpg", conflict, transforms.CONFLICTING_LABELS)
    return str(d), expected


def real_subset(n=190):
    """Up to n real UTKFace paths, plus the quirks and known copies of the shared set."""
    if not os.path.isdir(SHARED_UTK):
        pytest.skip("../shared UTKFace images not available")
    all_names = sorted(os.listdir(SHARED_UTK))
    chosen = set(all_names[:n])
    chosen.update(x for x in (
        "24_0_1_20170116220224657",  # no extension
        "39_1_20170116174525125.jpg.chip.jpg",  # race missing
        "14_0_0_20170110232651186.jpg.chip.jpg",  # pixel-identical, same labels
        "14_0_0_20170110231657425.jpg.chip.jpg",
        "10_0_0_20170110220644705.jpg.chip.jpg",  # pixel-identical, ages 10 and 13
        "13_0_0_20170110232519225.jpg.chip.jpg") if x in all_names)
    return [os.path.join(SHARED_UTK, x) for x in sorted(chosen)]


# -- a Dask scheduler and two workers on 127.0.0.1, started as on a real cluster ----------

START_TIMEOUT = 120  # seconds for the scheduler to write its address and both workers to join
# Should this test's process die without its cleanup (SIGKILL), the cluster still ends: the
# scheduler after this long without a task, the workers this long after losing it.
ORPHAN_SCHEDULER_IDLE = "600s"
ORPHAN_WORKER_DEATH = "60s"


def dask_env():
    """The environment of the cluster's processes and of the job's command."""
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_NUM_INTEROP_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "2"}


def _stop(proc):
    """Ends a process started in its own session, with everything it started."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def dask_cluster(tmp_path):
    """`(address "127.0.0.1:PORT", client)` of a scheduler with two single-thread workers."""
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    procs, client = [], None
    common = ["--host", "127.0.0.1", "--no-dashboard"]

    def start(name, *args):
        with open(logs / f"{name}.log", "w") as log:
            # cwd elsewhere than the project: the workers find it through PYTHONPATH only.
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", *args, *common], cwd=tmp_path, env=dask_env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

    try:
        start("scheduler", "scheduler", "--port", "0", "--scheduler-file", str(scheduler_file),
              "--idle-timeout", ORPHAN_SCHEDULER_IDLE)
        deadline = time.monotonic() + START_TIMEOUT
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert procs[0].poll() is None, (logs / "scheduler.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the scheduler wrote no address"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i in (1, 2):
            start(f"worker{i}", "worker", "--scheduler-file", str(scheduler_file),
                  "--nworkers", "1", "--nthreads", "1", "--name", f"worker{i}",
                  "--death-timeout", ORPHAN_WORKER_DEATH)
        client = Client(address, timeout=START_TIMEOUT)
        client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield address[len("tcp://"):], client
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):
            _stop(proc)
        left = [proc.args for proc in procs if proc.poll() is None]
        assert not left, f"still running after SIGKILL: {left}"


@pytest.fixture
def tools():
    """The helpers above (pytest's importlib mode lets test modules import no conftest)."""
    return types.SimpleNamespace(
        image_bytes=image_bytes, write=write, run_build=run_build, shard_files=shard_files,
        read_records=read_records, skipped_by_source=skipped_by_source,
        real_subset=real_subset, IN_PROCESS=IN_PROCESS, REPO=REPO,
        run_cli_limited=run_cli_limited, png_header_bomb=png_header_bomb, dask_env=dask_env)
