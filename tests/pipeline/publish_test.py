"""The output directory is published whole, by one run at a time: lock, staging, switch."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agegender import schema
from agegender import image_sources as sources
from pipeline import publish


def _dataset(directory, tag, shards=2):
    """A stand-in records directory whose files all say which run wrote them."""
    os.makedirs(directory, exist_ok=True)
    names = [f"utk_face-train.tfrecord-{i:05d}-of-{shards:05d}" for i in range(shards)]
    for name in names + ["dataset_info.json", "features.json", schema.REPORT_FILE]:
        with open(os.path.join(directory, name), "w") as f:
            f.write(tag)
    return sorted(names + ["dataset_info.json", "features.json", schema.REPORT_FILE])


def _contents(directory):
    return {n: open(os.path.join(directory, n)).read() for n in sorted(os.listdir(directory))}


def test_publish_replaces_the_whole_directory_and_cleans_up(tmp_path):
    out = str(tmp_path / "records")
    _dataset(out, "old", shards=3)
    with publish.Publication(out) as pub:
        assert os.path.dirname(pub.staging) == str(tmp_path)
        assert _contents(out)["report.json"] == "old"  # untouched while the run writes
        new = _dataset(pub.staging, "new", shards=2)
        pub.publish()
    assert sorted(os.listdir(out)) == new
    assert set(_contents(out).values()) == {"new"}  # no shard of the old run is left
    assert os.listdir(tmp_path) == ["records"]  # no staging directory, no lock file


def test_a_symlinked_output_directory_stays_a_link_to_the_new_data(tmp_path):
    real, link = str(tmp_path / "disk" / "records"), str(tmp_path / "records")
    _dataset(real, "old")
    os.symlink(real, link)
    with publish.Publication(link) as pub:
        assert os.path.dirname(pub.staging) == os.path.dirname(real)  # same filesystem
        _dataset(pub.staging, "new")
        pub.publish()
    assert os.path.islink(link) and set(_contents(link).values()) == {"new"}
    assert sorted(os.listdir(tmp_path / "disk")) == ["records"]


def test_a_failed_run_leaves_the_output_as_it_was(tmp_path):
    out = str(tmp_path / "records")
    _dataset(out, "old")
    old = _contents(out)
    with pytest.raises(RuntimeError):
        with publish.Publication(out) as pub:
            open(os.path.join(pub.staging, "utk_face-train.tfrecord-00000-of-00001"), "w").close()
            raise RuntimeError("the pipeline failed")
    assert _contents(out) == old
    assert os.listdir(tmp_path) == ["records"]
    # A run that failed after writing its report (e.g. inputs unaccounted for) keeps it for
    # diagnosis beside the output; the next run into the directory removes it.
    with pytest.raises(RuntimeError):
        with publish.Publication(out) as pub:
            _dataset(pub.staging, "failed")
            raise RuntimeError("inputs unaccounted for")
    assert _contents(out) == old
    assert _contents(pub.staging)[schema.REPORT_FILE] == "failed"
    with publish.Publication(out):
        assert not os.path.exists(pub.staging)


@pytest.mark.parametrize("how", ["exchange", "two_renames"])
def test_switch_without_an_atomic_exchange(tmp_path, monkeypatch, how):
    out = str(tmp_path / "records")
    _dataset(out, "old")
    if how == "two_renames":
        monkeypatch.setattr(publish, "exchange", lambda a, b: False)
    with publish.Publication(out) as pub:
        _dataset(pub.staging, "new")
        pub.publish()
    assert set(_contents(out).values()) == {"new"}
    assert os.listdir(tmp_path) == ["records"]


def test_exchange_is_atomic_where_the_kernel_has_it(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _dataset(str(a), "A")
    _dataset(str(b), "B")
    if not publish.exchange(str(a), str(b)):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here: the two-rename switch is used")
    assert set(_contents(str(a)).values()) == {"B"} and set(_contents(str(b)).values()) == {"A"}


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = str(tmp_path / "records")
    with publish.Publication(out):
        with pytest.raises(publish.OutputDirBusy, match=f"pid {os.getpid()}"):
            publish.Publication(out).__enter__()
        # Another spelling of the same directory is the same directory.
        os.symlink(tmp_path, tmp_path / "alias")
        with pytest.raises(publish.OutputDirBusy):
            publish.Publication(str(tmp_path / "alias" / "records") + "/").__enter__()
    with publish.Publication(out):  # free again once the first run is done
        pass


@pytest.mark.slow
def test_the_lock_of_a_killed_run_is_not_stuck(tmp_path, tools):
    out = str(tmp_path / "records")
    code = ("import os, signal\nfrom pipeline import publish\n"
            f"publish.Publication({out!r}).__enter__()\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tools.REPO,
                            env={**os.environ, "PYTHONPATH": tools.REPO},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    leftover = [n for n in os.listdir(tmp_path) if ".staging-" in n]
    assert len(leftover) == 1 and os.path.exists(out + publish.LOCK_SUFFIX)
    with publish.Publication(out) as pub:  # taken over, and the dead run's staging removed
        assert [n for n in os.listdir(tmp_path) if ".staging-" in n] == [os.path.basename(pub.staging)]
    assert os.listdir(tmp_path) == []


def test_an_output_directory_with_foreign_files_is_refused_and_kept(tmp_path):
    out = tmp_path / "records"
    _dataset(str(out), "old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(publish.OutputDirError, match="notes.txt"):
        publish.Publication(str(out)).__enter__()
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(publish.OutputDirError, match="not a directory"):
        publish.Publication(str(tmp_path / "file")).__enter__()
    assert sorted(os.listdir(tmp_path)) == ["file", "records"]  # no lock left behind


def test_only_leftovers_of_runs_into_this_directory_are_removed(tmp_path):
    out = str(tmp_path / "records")
    dead = out + ".staging-" + "0" * 32
    _dataset(dead, "dead")
    for keep in (out + ".staging-mine", str(tmp_path / ("other.staging-" + "0" * 32))):
        os.makedirs(keep)
    with publish.Publication(out):
        assert not os.path.exists(dead)
    assert sorted(os.listdir(tmp_path)) == ["other.staging-" + "0" * 32, "records.staging-mine"]


def test_other_filesystems_invalidate_the_metadata_first_and_write_it_last(tmp_path, monkeypatch):
    """The non-local path (through tf.io.gfile), exercised on a local directory."""
    import tensorflow as tf

    monkeypatch.setattr(sources, "is_local", lambda path: False)
    out = str(tmp_path / "records")
    _dataset(out, "old", shards=3)
    moves, real_rename = [], tf.io.gfile.rename

    def rename(src, dst, overwrite=False):
        moves.append((os.path.basename(dst), sorted(os.listdir(out))))
        real_rename(src, dst, overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", rename)
    with publish.Publication(out) as pub:
        with pytest.raises(publish.OutputDirBusy):  # the lock file is seen by a second run
            publish.Publication(out).__enter__()
        lock = json.load(open(out + publish.LOCK_SUFFIX))
        assert lock["pid"] == os.getpid()
        new = _dataset(pub.staging, "new", shards=2)
        pub.publish()
    assert sorted(os.listdir(out)) == new and set(_contents(out).values()) == {"new"}
    # Nothing of the old run is left once the first new file arrives; report.json is last.
    assert moves[0][1] == []
    assert [name for name, _ in moves][-2:] == ["dataset_info.json", schema.REPORT_FILE]
    assert os.listdir(tmp_path) == ["records"]


def test_other_filesystems_take_over_a_lock_whose_process_is_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "is_local", lambda path: False)
    out = str(tmp_path / "records")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    with open(out + publish.LOCK_SUFFIX, "w") as f:
        json.dump({"host": publish.socket.gethostname(), "pid": int(dead), "started": "x",
                   "token": "t"}, f)
    with publish.Publication(out):
        pass
    with open(out + publish.LOCK_SUFFIX, "w") as f:  # another host's lock: refused, with advice
        json.dump({"host": "elsewhere", "pid": 1, "started": "x", "token": "t"}, f)
    with pytest.raises(publish.OutputDirBusy, match="delete"):
        publish.Publication(out).__enter__()


# -- the job: killed, or run twice at once ---------------------------------------------------

def _faces(directory, tools, seeds):
    for i in seeds:
        tools.write(str(directory), f"{20 + i % 60}_{i % 2}_{i % 5}_20170101000000{i:03d}.jpg",
                    tools.image_bytes(i))


def _published(out, tools):
    """Everything a reader sees: shard bytes, report, and what TFDS reads from the metadata."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(out)
    counts = {split: len(list(builder.as_dataset(split=split))) for split in builder.info.splits}
    for split, info in builder.info.splits.items():
        assert counts[split] == info.num_examples
    return tools.shard_files(out), json.load(open(os.path.join(out, schema.REPORT_FILE))), counts


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before_finalize", "after_finalize"])
def test_a_run_killed_before_it_ends_leaves_the_previous_dataset_whole(tmp_path, tools, when):
    first, second, out = tmp_path / "first", tmp_path / "second", str(tmp_path / "records")
    _faces(first, tools, range(24))
    _faces(second, tools, range(100, 140))
    rc, _ = tools.run_build(str(first), out)
    assert rc == 0
    before = _published(out, tools)
    # The second run is killed (SIGKILL: nothing runs after it) when every shard is
    # written, before or after its report and metadata.
    kill = "os.kill(os.getpid(), signal.SIGKILL)"
    prelude = (
        "import os, signal\nfrom pipeline import writer\n_finalize = writer.finalize\n"
        "def finalize(*a, **k):\n"
        + (f"    {kill}\n" if when == "before_finalize" else
           f"    report = _finalize(*a, **k)\n    {kill}\n")
        + "writer.finalize = finalize\n")
    result = tools.run_cli_limited([f"--input={second}", f"--output_dir={out}", "--min_shards=3"],
                                   prelude=prelude)
    assert result.returncode == -signal.SIGKILL, (result.stderr or "")[-3000:]
    assert _published(out, tools) == before
    # The next run is not blocked by the dead one, and what it left is cleaned up.
    rc, report = tools.run_build(str(second), out, "--min_shards=3")
    assert rc == 0 and report["counts"]["written"] == 40
    assert sorted(os.listdir(tmp_path)) == ["first", "records", "second"]


@pytest.mark.slow
def test_a_second_run_into_the_same_directory_is_refused(tmp_path, tools, capsys):
    first, second, out = tmp_path / "first", tmp_path / "second", str(tmp_path / "records")
    _faces(first, tools, range(24))
    _faces(second, tools, range(100, 110))
    started, go = tmp_path / "started", tmp_path / "go"
    # The first run (a child) stops when its shards are written, until the test lets it go.
    prelude = (
        "import os, time\nfrom pipeline import writer\n_finalize = writer.finalize\n"
        "def finalize(*a, **k):\n"
        f"    open({str(started)!r}, 'w').close()\n"
        f"    deadline = time.time() + 120\n"
        f"    while not os.path.exists({str(go)!r}) and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    return _finalize(*a, **k)\n"
        "writer.finalize = finalize\n")
    script = (f"import sys\n{prelude}\nfrom pipeline import build_records\n"
              f"sys.exit(build_records.main({[f'--input={first}', f'--output_dir={out}', *tools.IN_PROCESS]!r}))\n")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=tools.REPO,
                             env={**os.environ, "PYTHONPATH": tools.REPO, "TF_CPP_MIN_LOG_LEVEL": "2"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not started.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert started.exists(), child.communicate(timeout=60)[1][-3000:]
        rc, _ = tools.run_build(str(second), out)
        assert rc == 2
        assert f"is being written by pid {child.pid}" in capsys.readouterr().err
        go.touch()
        _, stderr = child.communicate(timeout=240)
        assert child.returncode == 0, stderr[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    report = json.load(open(os.path.join(out, schema.REPORT_FILE)))
    assert report["counts"]["written"] == 24  # the first run's records, complete
    assert report["metadata"]["options"]["input"] == str(first)
    rc, report = tools.run_build(str(second), out)  # and afterwards the second may run
    assert rc == 0 and report["counts"]["written"] == 10


@pytest.mark.slow
def test_the_job_publishes_through_the_non_local_path_too(tmp_path, tools, monkeypatch):
    """Listing, reading, staging and switching as on gs:// (through Beam and tf.io.gfile)."""
    monkeypatch.setattr(sources, "is_local", lambda path: False)
    first, second, out = tmp_path / "first", tmp_path / "second", str(tmp_path / "records")
    _faces(first, tools, range(24))
    _faces(second, tools, range(100, 110))
    rc, _ = tools.run_build(str(first), out)
    assert rc == 0
    rc, report = tools.run_build(str(second), out, "--min_shards=1")
    assert rc == 0
    shards, published, counts = _published(out, tools)
    assert published == report and sum(counts.values()) == 10 and len(shards) == 3
    assert sorted(os.listdir(tmp_path)) == ["first", "records", "second"]
