"""commands: the installed console_scripts are the ones setup.py declares, and each runs
its program's main with the command line (the client's --help here: no TensorFlow)."""
import ast
import os
import subprocess
import sys

import commands

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _declared():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            return ast.literal_eval(node.value)["console_scripts"]
    raise AssertionError("setup.py declares no entry_points")


def test_setup_py_declares_every_command_and_each_module_has_a_main():
    assert _declared() == commands.console_scripts()
    for name, module in commands.COMMANDS.items():
        assert callable(getattr(commands, name))
        path = os.path.join(ROOT, *module.split(".")) + ".py"
        assert "\ndef main(" in open(path).read(), module


def test_an_entry_runs_the_programs_main_with_the_command_line():
    code = "import sys; sys.argv = ['agegender-client', '--help']; import commands; commands.client()"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--protocol" in result.stdout and "--max_image_pixels" in result.stdout
