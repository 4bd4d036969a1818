"""The records fingerprint a job dir keeps: same records (wherever they are) match, other
records are refused unless allowed, with a message saying what differs."""
import json
import shutil

import pytest

from agegender import job_dir as job_dir_lib
from agegender import schema
from trainer import records_fingerprint as rf


def _copy(records_dir, tmp_path, name, edit=None):
    copy = tmp_path / name
    shutil.copytree(records_dir, copy)
    if edit:
        report = json.loads((copy / schema.REPORT_FILE).read_text())
        edit(report)
        (copy / schema.REPORT_FILE).write_text(json.dumps(report))
    return copy


def _image_size(size):
    def edit(report):
        report["metadata"][schema.META_IMAGE_SIZE] = size
    return edit


def test_the_same_records_anywhere_have_the_same_fingerprint(tiny_records, tmp_path):
    def read_from(place):  # where the images were read from is not what they are
        def edit(report):
            report["metadata"]["options"] = {"input": place, "min_age": 0}
        return edit
    here = _copy(tiny_records, tmp_path, "here", read_from("../shared/UTKFace"))
    moved = _copy(tiny_records, tmp_path, "moved", read_from("/elsewhere/UTKFace"))
    a, b = rf.fingerprint(here), rf.fingerprint(moved)
    assert a["sha256"] == b["sha256"]
    assert a["image_size"] == 48 and a["examples"] == {"train": 96, "validation": 24, "test": 24}
    assert a["records_dir"] == str(here) and b["records_dir"] == str(moved)
    assert rf.fingerprint(_copy(tiny_records, tmp_path, "copy"))["sha256"] == rf.fingerprint(
        tiny_records)["sha256"]


@pytest.mark.parametrize("edit", [
    _image_size(160),
    lambda report: report["splits"]["train"].update(examples=95),
    lambda report: report["splits"]["test"]["age_decade"].update({"90-99": 1}),
], ids=["image-size", "train-count", "test-decades"])
def test_other_records_have_another_fingerprint(tiny_records, tmp_path, edit):
    other = _copy(tiny_records, tmp_path, "other", edit)
    assert rf.fingerprint(other)["sha256"] != rf.fingerprint(tiny_records)["sha256"]


def test_features_json_is_part_of_the_fingerprint(tiny_records, tmp_path):
    other = _copy(tiny_records, tmp_path, "other")
    before = rf.fingerprint(other)["sha256"]
    (other / rf.FEATURES_FILE).write_text('{"image": "other features"}')
    assert rf.fingerprint(other)["sha256"] != before


def test_a_job_dir_refuses_other_records_unless_allowed(tiny_records, tmp_path, caplog):
    job = tmp_path / "job"
    job.mkdir()
    assert rf.stored(job) is None
    rf.record(job, rf.check(job, tiny_records))  # a new job dir: nothing to compare with
    assert rf.stored(job)["sha256"] == rf.fingerprint(tiny_records)["sha256"]
    assert rf.check(job, tiny_records)["sha256"] == rf.stored(job)["sha256"]

    bigger = _copy(tiny_records, tmp_path, "records_160", _image_size(160))
    with pytest.raises(rf.OtherRecordsError) as refused:
        rf.check(job, bigger)
    message = str(refused.value)
    assert "\n" not in message and "--allow_other_records" in message
    assert "trained on other records (48 px; train 96, validation 24, test 24 images" in message
    assert "(160 px; train 96" in message
    assert rf.stored(job)["records_dir"] == str(tiny_records)  # nothing changed

    allowed = rf.check(job, bigger, allow_other_records=True)
    assert "--allow_other_records" in caplog.text
    rf.record(job, allowed)
    assert rf.stored(job)["records_dir"] == str(bigger)
    with pytest.raises(rf.OtherRecordsError):  # the job dir now belongs to the new records
        rf.check(job, tiny_records)


def test_a_job_dir_from_before_fingerprints_is_recorded_with_a_warning(tiny_records, tmp_path,
                                                                        caplog):
    job = tmp_path / "old_job"
    job.mkdir()
    (job / job_dir_lib.STATE_FILE).write_text("{}")
    (job / job_dir_lib.RECORDS_FINGERPRINT_FILE).write_text("not json")  # unreadable: none
    assert rf.check(job, tiny_records)["sha256"] == rf.fingerprint(tiny_records)["sha256"]
    assert "records no fingerprint" in caplog.text
