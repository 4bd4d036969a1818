"""The terminal filter: known library noise is dropped from fd 2, for children too; the
rest passes, in order."""
import subprocess
import sys
import textwrap

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
