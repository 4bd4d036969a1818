"""pipeline.annotate on Beam's DaskRunner, on a real Dask cluster (a scheduler and two worker
processes on 127.0.0.1, the `dask_cluster` fixture): the same rows, in the same order, and
the same report as on the DirectRunner."""
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from agegender import image_sources as sources
from pipeline import parquet_sink

JOB_TIMEOUT = 600


@pytest.fixture(scope="module")
def model_base(tiny_export):
    return tiny_export("clf_gender")


def _annotate(argv, tools):
    result = subprocess.run([sys.executable, "-m", "pipeline.annotate", *argv], cwd=tools.REPO,
                            env=tools.dask_env(), capture_output=True, text=True,
                            timeout=JOB_TIMEOUT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _outputs(out):
    data = os.path.join(out, parquet_sink.DATASET_DIR)
    files = {n: open(os.path.join(data, n), "rb").read() for n in sorted(os.listdir(data))}
    with open(os.path.join(out, parquet_sink.REPORT_FILE)) as f:
        report = json.load(f)
    report.pop("throughput")  # seconds, and the runner's name
    return files, report


@pytest.mark.slow
def test_dask_cluster_gives_the_direct_runners_rows_and_report(
        dask_cluster, model_base, synthetic_photos, photo_tools, tmp_path, tools, png_bomb):
    address, client = dask_cluster
    src = tmp_path / "in"
    photos = synthetic_photos(9, 21, faces_per_photo=(0, 3), face_sizes=(60, 140))
    for i, photo in enumerate(photos[:6]):
        tools.write(str(src), f"d{i % 2}/p{i}.jpg", photo_tools.encode(photo.image))
    whole = photo_tools.encode(photos[6].image)
    tools.write(str(src), "truncated.jpg", whole[:len(whole) // 3])  # a refused batch
    tools.write(str(src), "bomb.png", png_bomb)
    members = [photo_tools.encode(photo.image) for photo in photos[6:]]
    with tarfile.open(src / "album.tar.gz", "w:gz") as tar:
        for i, data in enumerate(members):
            info = tarfile.TarInfo(f"m{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    # Several files and batches, each file's rows written by the worker that answered them.
    flags = [f"--model={model_base}", f"--input={src}", "--batch_size=2", "--photos_per_file=3"]

    direct = str(tmp_path / "direct")
    _annotate([*flags, f"--output_dir={direct}"], tools)
    dask = str(tmp_path / "dask")
    result = _annotate([*flags, f"--output_dir={dask}", "--runner=DaskRunner",
                        f"--dask_client_address={address}"], tools)
    assert "annotated" in result.stdout

    # Both workers ran the job's inference (it did not run in the client's process).
    ran = client.run(lambda: "pipeline.inference_handler" in sys.modules)
    assert list(ran.values()) == [True, True]
    dask_files, dask_report = _outputs(dask)
    direct_files, direct_report = _outputs(direct)
    counts = dask_report["counts"]
    assert counts["inputs"] == 6 + 2 + 3 == counts["annotated"] + counts["skipped"]
    assert {s["source_id"]: s["reason"] for s in dask_report["skipped"]} == {
        "truncated.jpg": sources.UNDECODABLE, "bomb.png": sources.IMAGE_TOO_LARGE}
    assert dask_report == direct_report
    assert dask_files == direct_files  # the same rows in the same order, byte for byte
    # 9 listed inputs, at least 4 files (--min_shards): runs of 2 (min(3, 9 // 4)); the
    # runs of bomb.png alone and truncated.jpg alone have no rows: 3 files; the archive's
    # 3 members in one.
    assert len(dask_files) == 3 + 1
