"""Fixtures every part's tests share: hostile inputs, tiny exported models."""
import fcntl
import os
import shutil
import struct
import zlib

import pytest

# Memory probes run children under RLIMIT_DATA, which counts reserved address space: with
# pandas 3 installed, importing Beam makes pyarrow's default (jemalloc) pool reserve ~1 GiB
# it never touches. Every child of the suite inherits the system allocator instead.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def png_declaring(width, height):
    """A PNG of about 1 KB whose IHDR declares width x height: a decompression bomb (20000 x
    20000 decodes to 1.2 GB of pixels) that every decoding path must refuse from its header."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (1 << 20), 9)) + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def png_bomb():
    """A PNG declaring 20000 x 20000 pixels (400 MP, 1.2 GB decoded), 1-2 KB on disk."""
    return png_declaring(20000, 20000)


@pytest.fixture(scope="session")
def synthetic_photos():
    """synthetic_photos(count, seed, **options) -> `testing.synthetic_faces` photos
    (test-split faces of the shared UTKFace set pasted on backgrounds, with their truth
    boxes); the test is skipped when ../shared is not beside the repository (a worktree)."""
    import os

    from faces import utkface
    from testing import synthetic_faces

    if not os.path.isdir(utkface.SHARED_UTKFACE):
        pytest.skip("../shared UTKFace images not available")

    def make(count, seed, **options):
        return list(synthetic_faces.photos(count, seed, **options))
    return make


def encode_photo(pixels, fmt="JPEG", mode=None, **options):
    """uint8 pixels -> encoded bytes (PIL), optionally converted to `mode` ("L": grey)."""
    import io

    from PIL import Image

    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def plain_photo(width=320, height=240, seed=0):
    """Smooth random colours with nothing face-like in them (the detector finds no face)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


@pytest.fixture(scope="session")
def photo_tools():
    """`encode_photo` and `plain_photo` above (importlib mode: tests cannot import this file)."""
    import types

    return types.SimpleNamespace(encode=encode_photo, plain=plain_photo)


@pytest.fixture(scope="session")
def hostile_files():
    """`testing.hostile_files`: issue 23's costly files (scan bomb, false-size zip...)."""
    from testing import hostile_files

    return hostile_files


# --- Tiny models built once per run ------------------------------------------------------
# Exporting a tiny model costs ~13 CPU-seconds (the predict_photo signature traces the face
# detector); a dozen test files need the same few. Each is built once per `pytest` run by
# whichever pytest-xdist worker asks first and copied for every caller.


def built_once(tmp_path_factory, name, build):
    """Path of the run-wide directory `name`, filled by `build(path)` once per run.

    Under pytest-xdist the workers' temp dirs are `popen-gwN` inside the run's own, so the
    directory beside them is shared by the run's workers and by no other run; an exclusive
    lock (fcntl) makes the others wait for the first builder. A build that failed is redone.
    """
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built_once"
    root.mkdir(exist_ok=True)
    path, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            build(path)
            done.touch()
    return path


def _shared_job(tmp_path_factory, variant):
    """Run-wide job dir of `testing.tiny_models.VARIANTS[variant]`."""
    from testing import tiny_models

    if variant not in tiny_models.VARIANTS:
        raise ValueError(f"unknown tiny model variant {variant!r}; "
                         f"one of {sorted(tiny_models.VARIANTS)}")
    return built_once(tmp_path_factory, f"job_{variant}", lambda path: tiny_models.make_job_dir(
        path, **tiny_models.VARIANTS[variant]))


def _shared_export(tmp_path_factory, variant, options):
    """(run-wide model base path holding version 1 of that job dir, exported with
    `export_model.export_saved_model(**options)`, its name)."""
    job = _shared_job(tmp_path_factory, variant)
    name = "_".join(["models", variant, *(f"{k}-{v}" for k, v in sorted(options.items()))])

    def build(path):
        from export import export_model

        export_model.export_saved_model(str(job), str(path / "age"), **options)
    return built_once(tmp_path_factory, name, build) / "age", name


@pytest.fixture(scope="session")
def tiny_job(tmp_path_factory):
    """tiny_job(variant="clf_gender") -> a job dir of the caller's own (model.keras +
    model_spec.json of `testing.tiny_models.VARIANTS[variant]`): the model `tiny_export`
    exports."""
    def make(variant="clf_gender"):
        own = tmp_path_factory.mktemp(f"job_{variant}") / "job"
        shutil.copytree(_shared_job(tmp_path_factory, variant), own)
        return str(own)
    return make


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """tiny_export(variant="clf_gender", **export_options) -> a model base path of the
    caller's own (".../age") holding version 1 of `tiny_job(variant)`'s model, exported with
    `export_model.export_saved_model(**export_options)`; the caller may add versions."""
    def make(variant="clf_gender", **options):
        shared, name = _shared_export(tmp_path_factory, variant, options)
        own = tmp_path_factory.mktemp(name) / "age"
        shutil.copytree(shared, own)
        return str(own)
    return make


# --- Test tiers -------------------------------------------------------------------------
# unit (no marker): seconds, no training, no server; `make test-fast` runs these.
# integration: builds a tiny model, starts a server, a cluster or a browser; applied here to
#   every test that uses such a fixture, so a new test is tiered by what it needs.
# e2e: runs the project's commands as a user would (marked `e2e`, or `slow`, its old name).
# `make test` runs all three in parallel (pytest-xdist).
INTEGRATION_FIXTURES = frozenset({
    "tiny_job", "tiny_export", "job_dir", "job_dirs", "model_base", "exported", "analyzer",
    "server", "rest", "grpc_client", "limited_server", "unchecked_model_base", "reference",
    "backend", "backend_factory", "real_model_base", "real_backend", "face_model", "dask_cluster",
    "detector", "photos", "synthetic_photos", "tiny_records", "two_face_photo"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)
        if (not item.get_closest_marker("e2e")
                and INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.integration)


# --- Longest files first ----------------------------------------------------------------
# `make test` hands pytest-xdist workers a test file at a time in collection order
# (`--dist loadfile --no-loadscope-reorder`): a long file dispatched last keeps one worker
# busy while the other idles. The longest files are the ones that train the tiny model
# end to end (e2e tests on `tiny_records`), then other e2e files, then integration, then
# unit: each group keeps its collection order, and a file's tests stay together.
def _file_rank(file_items):
    def has(item, marker):
        return item.get_closest_marker(marker) is not None
    if any(has(i, "e2e") and "tiny_records" in getattr(i, "fixturenames", ())
           for i in file_items):
        return 0
    if any(has(i, "e2e") for i in file_items):
        return 1
    return 2 if any(has(i, "integration") for i in file_items) else 3


class _LongestFilesFirst:
    """A plugin of its own: its hook runs last, after the tiers above are marked, `-m` has
    deselected and pytest has grouped items by fixture."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        by_file = {}
        for item in items:
            by_file.setdefault(item.nodeid.split("::")[0], []).append(item)
        ranked = sorted(by_file.values(), key=_file_rank)  # stable: collection order within
        items[:] = [item for file_items in ranked for item in file_items]


def pytest_configure(config):
    config.pluginmanager.register(_LongestFilesFirst(), "longest_files_first")
