"""The terminal filter: known library noise is dropped from fd 2, for children too; the
rest passes, in order."""
import argparse
import ast
import glob
import io
import os
import subprocess
import sys
import textwrap

import pytest

from agegender import console

REPO = __file__.rsplit("/tests/", 1)[0]

NOISY = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795875336.396513    5906 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results",
    "I0000 00:00:1795875336.396780    5906 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1795875353.850886    5939 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error",
    "WARNING:root:apitools not found, and bigquery client libraries are not available despite",
    "WARNING:root:No semi_persistent_directory found: Crash logs will not be saved.",
    "WARNING:apache_beam.options.pipeline_options:Discarding unparseable args: ['--x']",
]


def test_known_noise_is_recognised_and_nothing_else():
    assert all(console.is_noise(line) for line in NOISY)
    for line in ("error: no 'train' records in 'x'", "Traceback (most recent call last):",
                 "I1128 task.py:248] Phase head: epochs 1..2", "E0000 something else broke"):
        assert not console.is_noise(line)


def _run(script, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_the_filter_drops_noise_of_the_process_and_its_children():
    lines = "\\n".join(NOISY[:2] + ["kept 1"] + NOISY[2:] + ["kept 2"])
    script = f"""
        import os, subprocess, sys
        from agegender import console
        console.quiet(verbose=False)
        os.write(2, b"{lines}\\n")
        subprocess.run([sys.executable, "-c",
                        "import sys; sys.stderr.write('{NOISY[5]}\\\\nchild kept\\\\n')"])
        print("stdout untouched", flush=True)
        sys.stderr.write("last line without newline")
    """
    result = _run(script)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["kept 1", "kept 2", "child kept",
                                          "last line without newline"]
    assert result.stdout == "stdout untouched\n"


def test_verbose_keeps_everything():
    script = f"""
        import os
        from agegender import console
        console.quiet()
        os.write(2, b"{NOISY[1]}\\n")
    """
    assert NOISY[1] in _run(script, AGEGENDER_VERBOSE="1").stderr
    assert NOISY[1] not in _run(script).stderr


@pytest.mark.parametrize("argv, verbose", [
    ([], False),
    (["-v"], True),  # argparse commands: -v counts
    (["-vv"], True),
    (["--verbose"], True),  # argparse commands' old switch (warns)
    (["--input=x", "-v", "--output_dir=y"], True),
    (["--verbosity=1"], True),  # every command
    (["--verbosity", "2"], True),
    (["-v", "1"], True),  # absl's short name with a level
    (["-v=1"], True),
    (["--verbosity=0"], False),  # absl's INFO: the project's own lines, no noise
    (["-v", "0"], False),
    (["--verbosity=-1"], False),
    (["-v", "--verbosity=0"], False),  # the last setting wins, as in argparse and absl
    (["--verbosity=0", "-v"], True),
    (["--verbose=2"], False),  # the trainer's old spelling of --keras_progress
    (["--verbose", "1"], False),
    (["--keras_progress=2"], False),
    (["--", "-v"], False),  # after --, an argument rather than a flag
    (["--verbose_logs"], False),
    (["-vx"], False),
])
def test_verbose_requested_reads_both_kinds_of_command_line(argv, verbose, monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    assert console.verbose_requested(argv) is verbose


@pytest.mark.parametrize("value, verbose", [("1", True), ("yes", True), ("0", False),
                                            ("", False)])
def test_verbose_requested_reads_the_environment(value, verbose, monkeypatch):
    monkeypatch.setenv(console.VERBOSE_ENV, value)
    assert console.verbose_requested([]) is verbose


def _parser():
    parser = argparse.ArgumentParser()
    console.add_verbose_flag(parser)
    parser.add_argument("--input")
    return parser


@pytest.mark.parametrize("argv, level", [
    ([], 0), (["-v"], 1), (["-vv"], 2), (["-v", "-v", "-v"], 3), (["--verbosity=2"], 2),
    (["--verbosity", "0"], 0), (["--verbosity=3", "-v"], 4), (["-vv", "--verbosity=1"], 1),
    (["--verbose"], 1), (["-v", "--verbose"], 2), (["--input=a", "-v", "--input", "b"], 1),
])
def test_argparse_verbosity_is_the_level_quiet_reads(argv, level, capsys):
    """`args.verbose` is the level (0 is false), and `requested_verbosity` (what `quiet()`
    reads before any parser runs) finds the same one."""
    assert _parser().parse_args(argv).verbose == level
    assert console.requested_verbosity(argv) == level


def test_the_old_verbose_switch_works_and_warns(capsys):
    assert _parser().parse_args(["--verbose"]).verbose == 1
    assert capsys.readouterr().err == "warning: --verbose is deprecated, use -v (the same value)\n"
    assert _parser().parse_args(["-v"]).verbose == 1
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_a_bad_verbosity_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args([f"--verbosity={value}"])
    assert exit_.value.code == 2
    assert f"--verbosity: expected a verbosity level >= 0, got '{value}'" in capsys.readouterr().err


def test_help_names_both_spellings_and_the_environment():
    text = _parser().format_help()
    assert "-v " in text and "--verbosity N" in text and console.VERBOSE_ENV in text
    assert "--verbose " not in text  # the old switch works but is not advertised


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_prints_at_most_every_interval_and_counts_everything():
    clock, out = FakeClock(), io.StringIO()
    progress = console.Progress("records job", "images processed", every=5, out=out,
                                clock=clock)
    for _ in range(4):  # 4 s: a short step prints nothing
        clock.now += 1
        progress.add(10)
    assert out.getvalue() == ""
    clock.now += 1
    progress.add(10)
    assert out.getvalue() == "records job: 50 images processed so far (10/s)\n"
    clock.now += 4.9
    progress.add(1)
    assert out.getvalue().count("\n") == 1  # not again before another 5 s
    clock.now += 0.1
    progress.add(1)
    assert out.getvalue().splitlines()[-1] == "records job: 52 images processed so far (5/s)"


def test_progress_shows_the_total_and_zero_seconds_means_never():
    clock, out = FakeClock(), io.StringIO()
    progress = console.Progress("evaluation", "images evaluated", total=300, every=2, out=out,
                                clock=clock)
    clock.now += 2
    progress.add(64)
    assert out.getvalue() == "evaluation: 64 of 300 images evaluated so far (32/s)\n"
    clock.now += 10
    progress.add(236)  # done: the step's summary follows, no "300 of 300 so far"
    assert out.getvalue().count("\n") == 1
    out = io.StringIO()
    silent = console.Progress("x", "y", every=0, out=out, clock=clock)
    clock.now += 1000
    silent.add(5)
    assert silent.count == 5 and out.getvalue() == ""


def _commands():
    """Every module of the project that runs as a program (a top-level __main__ guard)."""
    for path in sorted(glob.glob(f"{REPO}/*/**/*.py", recursive=True)):
        if "/tests/" in path or "/." in path or "/build/" in path:
            continue
        tree = ast.parse(open(path).read())
        if any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               for node in tree.body):
            yield os.path.relpath(path, REPO), tree


def _turns_quiet_on(node):
    return isinstance(node, ast.If) and "console.quiet()" in ast.unparse(node)


def test_every_command_turns_quiet_on_before_importing_a_library():
    # TensorFlow prints its start-up lines at import: a command that imports it (or anything
    # that might) before console.quiet() shows them whatever quiet() does later.
    commands = dict(_commands())
    assert {"pipeline/build_records.py", "trainer/task.py", "evaluation/evaluate.py",
            "export/export_model.py", "serving/server.py", "serving/client.py",
            "scripts/demo.py", "web/app.py"} <= set(commands)
    for name, tree in commands.items():
        early = []
        for node in tree.body:
            if _turns_quiet_on(node):
                break
            if isinstance(node, ast.Import):
                early += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                early += [f"{node.module}.{a.name}" for a in node.names]
        else:
            raise AssertionError(f"{name} never calls console.quiet() before its imports")
        libraries = [m for m in early if m.split(".")[0] not in sys.stdlib_module_names
                     and m != "agegender.console"]
        assert not libraries, f"{name} imports {libraries} before console.quiet()"
