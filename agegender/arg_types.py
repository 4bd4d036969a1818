"""argparse types for the project's commands: a bad flag value is a usage error that names
the flag and what it expects (exit 2 before anything starts), never a traceback or a
server that cannot work. Standard library only: the web page's server imports it without
TensorFlow."""
import argparse


def boolean(text):
    """true/false, yes/no, on/off, 1/0 (TF Serving's flags take these)."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def at_least(minimum, what, kind=int, strict=False):
    """A number of `kind` >= minimum (> minimum with `strict`); `what` names it in errors."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value > minimum if strict else value >= minimum):
            bound = f"> {minimum}" if strict else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value
    return parse


def positive(kind, what):
    """A number of `kind` > 0."""
    return at_least(0, what, kind, strict=True)


def warn_renamed(argv, renamed, stream=None):
    """One line on stderr per old spelling found in `argv` ({old: new}, e.g.
    {"--export_base": "--output_dir"}). The command accepts both (the old one as a second
    option string of the same argument, so parsing is argparse's own); users' scripts keep
    working and are told the spelling every command now shares."""
    import sys
    stream = stream or sys.stderr
    seen = set()
    for arg in argv or ():
        name = arg.split("=", 1)[0]
        if name in renamed and name not in seen:
            seen.add(name)
            print(f"warning: {name} is deprecated, use {renamed[name]} (the same value)",
                  file=stream)
    return sorted(seen)


MAX_IMAGE_PIXELS_HELP = (
    "refuse an image whose header declares more pixels (every frame of a GIF or WebP "
    "counted), before any decoder allocates them: decompression bombs are never decoded. A "
    "positive count; raise it for larger photos (there is no 'no limit')")


def add_max_image_pixels(parser, default):
    """`--max_image_pixels`, the same flag in every argparse command (one meaning: a positive
    pixel count; 0 and negative values are usage errors). `default`:
    `agegender.image_header.DEFAULT_MAX_PIXELS` for every command that decodes photos."""
    parser.add_argument("--max_image_pixels", type=positive(int, "a pixel count"),
                        default=default, help=MAX_IMAGE_PIXELS_HELP + " (default %(default)s)")


def define_max_image_pixels(flag_values, default):
    """The same flag for the absl commands (trainer, evaluation)."""
    from absl import flags

    flags.DEFINE_integer("max_image_pixels", default, MAX_IMAGE_PIXELS_HELP + ".",
                         lower_bound=1, flag_values=flag_values)
