"""The records job under issue 23's hostile inputs: a JPEG whose decoding costs minutes and a
zip member far larger than its header says are skips with their reasons, in bounded memory."""
import json
import os

import pytest

from agegender import image_sources as sources
from agegender import schema

BOMB = "40_1_0_20170101000000100.jpg"
ZIP_BOMB = "30_1_0_20170101000000999.jpg"  # the name `zip_with_false_size` gives its member


@pytest.mark.slow
def test_a_scan_bomb_and_a_false_size_zip_member_are_skips_in_bounded_memory(
        tmp_path, tools, hostile_files):
    """The scan bomb (0.1 MB, ~15 s of CPU to decode) is image_too_costly; the zip member
    (2 GB of zeros declaring 1,000 bytes) is file_too_large. The child runs under a 2.5 GiB
    data limit: a healthy run of the job ends with ~1.6 GB of VmData (TF and Beam loaded,
    measured), and the old one-call inflate of the member needed 2 GB on top of that."""
    src = str(tmp_path / "faces")
    faces = [f"{20 + i}_0_0_20170101000000{i:03d}.jpg" for i in range(4)]
    for i, name in enumerate(faces):
        tools.write(src, name, tools.image_bytes(i))
    tools.write(src, BOMB, hostile_files.jpeg_scan_bomb(2048, 5000))
    zipped = "50_0_0_20170101000000200.jpg"
    tools.write(src, "more.zip", hostile_files.zip_with_false_size(
        {zipped: tools.image_bytes(200)}, 2_097_152_000, 1000))
    out = str(tmp_path / "records")
    result = tools.run_cli_limited([f"--input={src}", f"--output_dir={out}"], data_limit=5 << 29)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, schema.REPORT_FILE), encoding="utf-8") as f:
        report = json.load(f)
    assert tools.skipped_by_source(report) == {BOMB: sources.IMAGE_TOO_COSTLY,
                                               ZIP_BOMB: sources.FILE_TOO_LARGE}
    assert report["counts"]["written"] == len(faces) + 1
    details = {s["source_id"]: s["detail"] for s in report["skipped"]}
    assert "5,006 scans, over the limit of 100" in details[BOMB]
    assert "its header declares 1,000" in details[ZIP_BOMB]
