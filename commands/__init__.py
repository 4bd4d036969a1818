"""The `console_scripts` of the package: one installed command per user-facing program.

Each entry quiets the libraries' start-up lines first (`agegender.console.quiet`, as every
`python -m` program does as its first statement: TensorFlow prints at import, so the
program's module is imported after it), then runs the program's own `main` with the
command line. The programs are unchanged: `agegender-train --flagfile=F` is
`python -m trainer.task --flagfile=F`.
"""
import importlib
import sys

# entry point (setup.py's console_scripts: "<command> = commands:<entry>") -> the module whose
# main() it runs. The installed command is `command_name(entry)`: agegender-records, ...
COMMANDS = {
    "records": "pipeline.build_records",
    "annotate": "pipeline.annotate",
    "train": "trainer.task",
    "evaluate": "evaluation.evaluate",
    "export": "export.export_model",
    "export_litert": "export.export_litert",
    "export_litert_faces": "export.export_litert_faces",
    "serve": "serving.server",
    "client": "serving.client",
    "predict": "analyzer.predict",
    "web": "web.app",
    "video": "video.annotate",
}


def command_name(entry):
    """The installed command of an entry point: "agegender-" + the entry, "_" spelled "-"."""
    return "agegender-" + entry.replace("_", "-")


def run(module):
    """Quiet, then `module.main()` (argparse or absl: each reads sys.argv itself)."""
    from agegender import console

    console.quiet()
    result = importlib.import_module(module).main()
    sys.exit(result if isinstance(result, int) else 0)


def _entry(module):
    def entry():
        run(module)
    entry.__doc__ = f"python -m {module}"
    return entry


for _name, _module in COMMANDS.items():
    globals()[_name] = _entry(_module)


def console_scripts():
    """setup.py's entry_points["console_scripts"]."""
    return [f"{command_name(name)} = commands:{name}" for name in COMMANDS]
