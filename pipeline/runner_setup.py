"""Beam runner set-up for the jobs (`pipeline.build_records`, `pipeline.annotate`): the
options from the flags Beam gets, the DirectRunner's local defaults, the DaskRunner's
partitions and cluster, their log lines kept quiet, and a failed local cluster told in one
line.

Without a `--runner` a job runs on the DirectRunner with one worker thread per local core,
in this process (`--direct_running_mode=multi_processing` for worker processes).
`--runner=DaskRunner [--dask_client_address=HOST:PORT]` runs it on a Dask cluster (without an
address, on a local one it starts and stops).
"""
import logging
import os

from apache_beam.options.pipeline_options import (
    DirectOptions, PipelineOptions, StandardOptions, WorkerOptions)

DEFAULT_DIRECT_RUNNING_MODE = "in_memory"

# dask's configuration of the `distributed` logger, as an environment variable.
DASK_WORKER_LOG_LEVEL_VARIABLE = "DASK_LOGGING__DISTRIBUTED"

# Runners Beam knows only by their full name.
RUNNER_NAMES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


def pipeline_options(beam_args, inputs=(), cluster_threads=None):
    """Beam options from the unknown flags; local default: DirectRunner on all cores.

    inputs: the listed `sources.InputFile`s, which size the DaskRunner's partitions, with
    `cluster_threads(DaskOptions)`, the Dask cluster's worker threads (default:
    `dask_cluster_threads`, which asks the scheduler).
    """
    options = PipelineOptions(beam_args)
    given = {a.split("=", 1)[0].lstrip("-") for a in beam_args if a.startswith("--")}
    standard = options.view_as(StandardOptions)
    if "runner" not in given:
        standard.runner = "DirectRunner"
    standard.runner = RUNNER_NAMES.get(standard.runner, standard.runner)
    if "direct_running_mode" not in given:
        # Threads of this process, data handed over in memory: the TF ops (decode, resize,
        # encode) release the GIL, so the workers still use every core, and the job pays no
        # worker processes (each imports TensorFlow, and exits slowly) and no gRPC data
        # channel: ~7 s less per run and ~30% less CPU per image than multi_processing,
        # same bytes (docs/records.md). With more than one worker Beam runs the
        # parts of each stage in parallel threads, one in-memory worker each, although it
        # logs that in_memory "should" be multi_processing or multi_threading (silenced in
        # `main`). multi_threading (in-process workers behind gRPC) lost elements on the
        # full 18,970 images in two checked runs. finalize checks inputs = written + skipped.
        options.view_as(DirectOptions).direct_running_mode = DEFAULT_DIRECT_RUNNING_MODE
    if "direct_num_workers" not in given:
        options.view_as(DirectOptions).direct_num_workers = 0  # 0 = one worker per core
    if "default_sdk_harness_log_level" not in given:
        # Worker processes otherwise log every gRPC channel they open at INFO.
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "WARNING"
    if is_dask(options):
        try:
            from apache_beam.runners.dask.dask_runner import DaskOptions
        except ImportError as e:
            raise RunnerUnavailable(
                f"the DaskRunner needs dask and distributed ({e}): pip install "
                "'apache-beam[dask]', or this project with its 'dask' extra") from e
        if not given & {"dask_npartitions", "dask_partition_size"}:
            dask_options = options.view_as(DaskOptions)
            threads = (cluster_threads or dask_cluster_threads)(dask_options)
            dask_options.npartitions = dask_partitions(inputs, threads)
    return options


def dask_partitions(inputs, threads):
    """The DaskRunner's partitions of each Create (--dask_npartitions) for these inputs on
    a cluster of `threads` worker threads.

    That runner never repartitions (its Reshuffle does nothing, a GroupByKey keeps the
    number of partitions, a Flatten adds them up), so this number is both the parallelism
    of the conversion and the size of every shuffle after it: a Dask "tasks" shuffle of n
    partitions is ~n^2 small tasks while n <= 32, and every Flatten before a GroupByKey adds
    partitions. So: as few as keep every thread busy, in equal waves (a multiple of
    `threads`), with at most about DASK_PARTITION_BYTES of listed input each (a partition's
    data is held in memory whole, as a list; Dask's guidance is partitions of ~100 MB).
    """
    threads = max(1, threads)
    listed = sum(f.size or 0 for f in inputs)
    waves = max(1, -(-listed // (DASK_PARTITION_BYTES * threads)))
    return waves * threads


DASK_PARTITION_BYTES = 128 << 20


def dask_cluster_threads(dask_options):
    """The worker threads of the Dask cluster `dask_options` (DaskOptions) name: asked of
    its scheduler, or, without an address or scheduler file, those of the local cluster
    the runner will start (dask's default: one per core)."""
    if starts_local_cluster(dask_options):
        from dask.system import CPU_COUNT
        return CPU_COUNT
    from distributed import Client

    where = dask_options.address or dask_options.scheduler_file
    kwargs = {"timeout": dask_options.timeout} if isinstance(dask_options.timeout, int) else {}
    try:
        with Client(address=dask_options.address, scheduler_file=dask_options.scheduler_file,
                    set_as_default=False, **kwargs) as client:
            threads = sum(client.nthreads().values())
    except (OSError, ValueError) as e:  # unreachable (TimeoutError is an OSError), bad file
        raise RunnerUnavailable(f"cannot reach the Dask scheduler at {where}: {e}") from e
    if not threads:
        raise RunnerUnavailable(f"the Dask cluster at {where} has no workers yet: start "
                                "them (dask worker ...) before the job")
    return threads


def starts_local_cluster(dask_options):
    """Whether the DaskRunner starts a cluster of its own on this machine: `dask_options`
    (DaskOptions) name no scheduler, by address or by file."""
    return not (dask_options.address or dask_options.scheduler_file)


def runs_in_process(options):
    """Whether Beam `options` run the job's workers in this process (the DirectRunner's
    in_memory mode), so that what this process loads, they reuse."""
    return (options.view_as(StandardOptions).runner == "DirectRunner"
            and options.view_as(DirectOptions).direct_running_mode == "in_memory")


def is_dask(options):
    """Whether Beam `options` name the DaskRunner."""
    return options.view_as(StandardOptions).runner in (
        "DaskRunner", RUNNER_NAMES["DaskRunner"])


class RunnerUnavailable(Exception):
    """The --runner named cannot run: packages not installed, or its cluster not reachable."""


def local_cluster_start_failure(error):
    """A one-line reason when `error` is the local Dask cluster failing to start (a worker
    process killed or dying while it started, a start-up timeout), else None.

    The DaskRunner starts that cluster inside `Client()`, so the failure arrives as whatever
    the pipeline run raised; it is recognised by coming from `distributed.deploy` (where
    LocalCluster starts its workers). The deepest cause names what failed.
    """
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    if not any(f"{os.sep}distributed{os.sep}deploy{os.sep}" in f.filename for f in frames):
        return None
    cause = error
    for _ in range(32):  # a chain, bounded (an exception can be its own context)
        if (cause.__cause__ or cause.__context__) is None:
            break
        cause = cause.__cause__ or cause.__context__
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return (f"the local Dask cluster did not start ({reason}): a worker process was killed "
            f"or failed while starting; run the job again, or start a cluster and pass "
            f"--dask_client_address")


class DaskStartFailed(Exception):
    """The local Dask cluster failed to start (the message says why, in one line)."""


def disconnect(p):
    """Closes the Dask client a DaskRunner run leaves open (it also stops the local cluster
    the client started when no --dask_client_address was given; a failed run's remaining
    tasks are cancelled)."""
    client = getattr(getattr(p, "result", None), "client", None)
    if client is not None:
        client.close()


class _InMemoryWorkersFilter(logging.Filter):
    """Drops the FnApiRunner's warning that in_memory with several workers "should" be
    another mode: it does run them in parallel (see pipeline_options), on purpose here."""

    def filter(self, record):
        return not str(record.msg).startswith("If direct_num_workers is not equal to 1")


_IN_MEMORY_FILTER = _InMemoryWorkersFilter()


def _quiet_in_memory_warning():
    # The FnApiRunner's module logger (adding the same filter twice is a no-op).
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(
        _IN_MEMORY_FILTER)


def quiet_runner(beam_options):
    """Keeps the runner's start-up and per-connection log lines off the terminal (the jobs'
    quiet default, `agegender.console`); call before running a pipeline."""
    _quiet_in_memory_warning()
    if is_dask(beam_options):
        # The client (and a local cluster's scheduler) log every connection at INFO, and
        # the worker processes of the local cluster the runner starts (no address) ~15
        # lines each at start and stop: they read their logging level from the
        # environment they inherit when they import distributed.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        from apache_beam.runners.dask.dask_runner import DaskOptions
        if starts_local_cluster(beam_options.view_as(DaskOptions)):
            os.environ.setdefault(DASK_WORKER_LOG_LEVEL_VARIABLE, "warning")
