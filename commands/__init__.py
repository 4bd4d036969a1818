"""The `console_scripts` of the package: one installed command per user-facing program.

Each entry quiets the libraries' start-up lines first (`agegender.console.quiet`, as every
`python -m` program does as its first statement: TensorFlow prints at import, so the
program's module is imported after it), then runs the program's own `main` with the
command line. The programs are unchanged: `agegender-train --flagfile=F` is
`python -m trainer.task --flagfile=F`.
"""
import importlib
import sys

# entry point (setup.py's console_scripts: "<command> = commands:<entry>") ->
# (installed command, the module whose main() it runs)
COMMANDS = {
    "records": ("agegender-records", "pipeline.build_records"),
    "annotate": ("agegender-annotate", "pipeline.annotate"),
    "train": ("agegender-train", "trainer.task"),
    "evaluate": ("agegender-evaluate", "evaluation.evaluate"),
    "export": ("agegender-export", "export.export_model"),
    "export_litert": ("agegender-export-litert", "export.export_litert"),
    "export_litert_faces": ("agegender-export-litert-faces", "export.export_litert_faces"),
    "serve": ("agegender-serve", "serving.server"),
    "client": ("agegender-client", "serving.client"),
    "predict": ("agegender-predict", "analyzer.predict"),
    "web": ("agegender-web", "web.app"),
    "video": ("agegender-video", "video.annotate"),
}


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


for _name, (_command, _module) in COMMANDS.items():
    globals()[_name] = _entry(_module)


def console_scripts():
    """setup.py's entry_points["console_scripts"]."""
    return [f"{command} = commands:{name}" for name, (command, _) in COMMANDS.items()]
