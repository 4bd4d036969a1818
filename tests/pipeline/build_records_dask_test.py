"""The job on Beam's DaskRunner, on a real Dask cluster: the same bytes as on the DirectRunner.

A scheduler and two worker processes are started on 127.0.0.1 with the `dask scheduler` /
`dask worker` commands, as on a real cluster; they import the project from PYTHONPATH
(elsewhere: the package installed on every worker) and are always stopped at the end (the
`dask_cluster` fixture, tests/pipeline/conftest.py).
"""
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

from agegender import image_sources as sources
from agegender import schema
from pipeline import build_records, records_graph, runner_setup

JOB_TIMEOUT = 420


def _run_cli(argv, tools, timeout=JOB_TIMEOUT):
    result = subprocess.run([sys.executable, "-m", "pipeline.build_records", *argv],
                            cwd=tools.REPO, env=tools.dask_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _outputs(out):
    """Everything a run writes but the report: shard bytes and TFDS metadata."""
    return {name: open(os.path.join(out, name), "rb").read() for name in sorted(os.listdir(out))
            if name != schema.REPORT_FILE}


def _report(out):
    with open(os.path.join(out, schema.REPORT_FILE)) as f:
        return json.load(f)


@pytest.mark.slow
def test_dask_cluster_writes_the_same_records_and_report_as_the_direct_runner(
        bad_inputs, dask_cluster, tmp_path, tools):
    address, client = dask_cluster
    input_dir, expected = bad_inputs
    # Enough faces for several units of work (transforms.group_files), so both workers
    # convert images; and an archive, read by one worker, its members past the spread
    # budget converted in place (the reader's three outputs), with an unsafe member.
    for i in range(100):
        tools.write(input_dir, f"more/{20 + i % 50}_{i % 2}_{i % 5}_20170102000000{i:03d}.jpg",
                    tools.image_bytes(1000 + i))
    members = tmp_path / "members"
    for i in range(12):
        tools.write(str(members), f"{30 + i}_{i % 2}_1_20170103000000{i:03d}.jpg",
                    tools.image_bytes(2000 + i))
    with tarfile.open(os.path.join(input_dir, "faces.tar.gz"), "w:gz") as tar:
        tar.add(str(members), arcname=".")
        tar.add(str(members / "30_0_1_20170103000000000.jpg"), arcname="../escape.jpg")
    flags = ["--archive_spread_mb=0.01"]  # a few members spread, the others converted in place

    direct = str(tmp_path / "direct")
    rc, direct_report = tools.run_build(input_dir, direct, *flags)
    assert rc == 0
    dask = str(tmp_path / "dask")
    start = time.monotonic()
    result = _run_cli([f"--input={input_dir}", f"--output_dir={dask}", *flags,
                       "--runner=DaskRunner", f"--dask_client_address={address}"], tools)
    print(f"DaskRunner run: {time.monotonic() - start:.1f} s")
    assert "written" in result.stdout

    # The partitions were sized from the cluster's threads, asked of its scheduler.
    from apache_beam.runners.dask.dask_runner import DaskOptions
    assert runner_setup.dask_cluster_threads(
        DaskOptions([f"--dask_client_address={address}"])) == 2
    # Both workers ran the job's code (it was not run in the client's process).
    assert client.run(lambda: "pipeline.transforms" in sys.modules) == {
        w: True for w in client.scheduler_info()["workers"]}
    dask_report = _report(dask)
    counts = dask_report["counts"]
    assert counts["inputs"] == len(expected) + 100 + 13
    assert counts["inputs"] == counts["written"] + counts["skipped"]
    skipped = tools.skipped_by_source(dask_report)
    assert {n: r for n, r in skipped.items() if n in expected} == {
        n: r for n, r in expected.items() if r is not None}
    assert skipped["../escape.jpg"] == sources.UNSAFE_ARCHIVE_PATH
    assert dask_report == direct_report  # the report names no runner
    dask_files, direct_files = _outputs(dask), _outputs(direct)
    assert sum(".tfrecord-" in name for name in dask_files) == sum(
        info["shards"] for info in dask_report["splits"].values())
    assert dask_files == direct_files


@pytest.mark.slow
def test_dask_runner_without_an_address_starts_and_stops_a_local_cluster(tmp_path, tools):
    src = tmp_path / "faces"
    for i in range(8):
        tools.write(str(src), f"{20 + i}_{i % 2}_0_20170101000000{i:03d}.jpg", tools.image_bytes(i))
    tools.write(str(src), "no_labels.jpg", tools.image_bytes(99))
    direct = str(tmp_path / "direct")
    rc, direct_report = tools.run_build(str(src), direct)
    assert rc == 0
    dask = str(tmp_path / "dask")
    # Three partitions on the local cluster's two threads: an uneven second wave.
    result = _run_cli([f"--input={src}", f"--output_dir={dask}", "--runner=DaskRunner",
                       "--dask_npartitions=3"], tools)
    # The local cluster's workers log at WARNING, not their INFO start-up and shutdown.
    assert "INFO:distributed" not in result.stderr
    assert _report(dask) == direct_report
    assert direct_report["counts"]["written"] == 8 and direct_report["counts"]["skipped"] == 1
    assert _outputs(dask) == _outputs(direct)


@pytest.mark.slow
def test_the_shard_plan_by_group_by_key_gives_the_same_records_as_by_side_input(
        bad_inputs, tmp_path, tools):
    """build_pipeline(side_inputs=False), the DaskRunner's graph, on the DirectRunner."""
    import apache_beam as beam

    input_dir, expected = bad_inputs
    inputs = sources.list_inputs(input_dir)
    outputs = {}
    for side_inputs in (True, False):
        out = tmp_path / f"side_inputs_{side_inputs}"
        out.mkdir()
        options = records_graph.BuildOptions(output_dir=str(out), min_shards=3)
        with beam.Pipeline(options=runner_setup.pipeline_options(tools.IN_PROCESS)) as p:
            records_graph.build_pipeline(p, inputs, options, side_inputs=side_inputs)
        outputs[side_inputs] = {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}
    report = json.loads(outputs[True][schema.REPORT_FILE])
    assert report["counts"]["inputs"] == len(expected)
    assert sum(".tfrecord-" in name for name in outputs[True]) == 3 + 2 + 3  # 2 validation images
    assert outputs[False] == outputs[True]


def test_dask_runner_options():
    """`--runner=DaskRunner` is accepted (Beam knows it only by its full name) and the
    partitions follow the cluster's threads and the input size unless given."""
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.dask.dask_runner import DaskOptions

    def files(n):
        return [sources.InputFile(f"/x/{i}.jpg", f"{i}.jpg", 1 << 20, False) for i in range(n)]

    asked = []

    def threads(n):
        def cluster_threads(dask_options):
            asked.append(dask_options.address)
            return n
        return cluster_threads

    options = runner_setup.pipeline_options(
        ["--runner=DaskRunner", "--dask_client_address=127.0.0.1:8786"], files(200), threads(4))
    assert options.view_as(StandardOptions).runner == \
        "apache_beam.runners.dask.dask_runner.DaskRunner"
    assert options.view_as(DaskOptions).address == "127.0.0.1:8786"
    assert asked == ["127.0.0.1:8786"]
    assert options.view_as(DaskOptions).npartitions == 4  # one per thread: 200 MB fit in 4
    big = runner_setup.pipeline_options(["--runner=DaskRunner"], files(1000), threads(2))
    assert big.view_as(DaskOptions).npartitions == 8  # 1000 MB: 4 waves of 2, 125 MB each
    given = runner_setup.pipeline_options(["--runner=DaskRunner", "--dask_npartitions=3"],
                                           files(1000), threads(2))
    assert given.view_as(DaskOptions).npartitions == 3
    given = runner_setup.pipeline_options(["--runner=DaskRunner", "--dask_partition_size=50"],
                                           files(1000), threads(2))
    assert given.view_as(DaskOptions).npartitions is None
    assert given.view_as(DaskOptions).partition_size == 50
    assert len(asked) == 2  # not asked when the partitions are given


def test_dask_partitions_keep_every_thread_busy_in_equal_waves():
    def files(sizes_mb):
        return [sources.InputFile(f"/x/{i}", f"{i}", mb << 20, False)
                for i, mb in enumerate(sizes_mb)]

    assert runner_setup.dask_partitions([], 2) == 2
    assert runner_setup.dask_partitions(files([143]), 2) == 2  # the shared subset
    assert runner_setup.dask_partitions(files([300]), 2) == 4  # 128 MB at most: 3 -> 4
    assert runner_setup.dask_partitions(files([100] * 10), 16) == 16
    assert runner_setup.dask_partitions(files([1]), 0) == 1


def test_an_unreachable_dask_scheduler_is_a_clear_error(tmp_path, capsys, tools):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tools.write(str(tmp_path / "in"), "20_0_0_20170101000000001.jpg", tools.image_bytes(1))
    rc = build_records.main([f"--input={tmp_path / 'in'}", f"--output_dir={tmp_path / 'out'}",
                             "--runner=DaskRunner", f"--dask_client_address=127.0.0.1:{port}",
                             "--dask_connection_timeout=2"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Dask scheduler at 127.0.0.1:{port}" in err
    assert not (tmp_path / "out").exists()


def test_dask_runner_missing_is_a_clear_error(tmp_path, capsys, monkeypatch, tools):
    tools.write(str(tmp_path / "in"), "20_0_0_20170101000000001.jpg", tools.image_bytes(1))
    monkeypatch.setitem(sys.modules, "apache_beam.runners.dask.dask_runner", None)  # not installed
    rc = build_records.main([f"--input={tmp_path / 'in'}", f"--output_dir={tmp_path / 'out'}",
                             "--runner=DaskRunner"])
    assert rc == 2
    assert "the DaskRunner needs dask and distributed" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_a_local_cluster_killed_while_starting_is_one_clear_line(tmp_path, tools):
    """The local cluster's worker processes are killed as they start (a preload that
    SIGKILLs its own process): the job ends with one error line saying the cluster did not
    start, no traceback of Dask's internals, and no output directory."""
    src = tmp_path / "faces"
    tools.write(str(src), "20_0_0_20170101000000000.jpg", tools.image_bytes(1))
    preload = tmp_path / "preload"
    preload.mkdir()
    (preload / "die_at_start.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    env = tools.dask_env()
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(preload)])
    env["DASK_DISTRIBUTED__WORKER__PRELOAD"] = '["die_at_start"]'
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "pipeline.build_records", f"--input={src}",
                             f"--output_dir={out}", "--runner=DaskRunner"], cwd=tools.REPO,
                            env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert result.returncode == 2, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr[-4000:]
    assert errors[0].startswith("build_records: error: the local Dask cluster did not start ("
                                ), errors[0]
    assert not out.exists()
