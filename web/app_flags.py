"""`python -m web.app`'s flags for the page server's bounds, kept apart from the server: one
table of names and help, typed and defaulted from `web.app.WebApp`'s keywords."""
import inspect

from agegender import arg_types


# Old spellings still accepted (users' scripts), with a warning naming the project's one.
RENAMED_FLAGS = {"--backend": "--server"}

# The bounds' flags and their help (a "(default ...)" added where it has none); each takes
# a positive number, of the type and default of WebApp's keyword of that name.
LIMIT_FLAGS = {
    "max_request_bytes": "largest upload (default %(default)s: as base64 in JSON it fits the "
                         "model server's default 16 MiB)",
    "max_image_pixels": "largest photo by its header's width x height",
    "timeout": "seconds one photo may take, the wait for a slot and the model server's whole "
               "answer included",
    "max_concurrent_predictions": "photos in flight to the model server at once",
    "max_connections": "open connections; beyond, a newcomer replaces the one waiting longest "
                       "without a request in progress, else gets 503",
    "idle_timeout": "seconds before an idle keep-alive connection is closed",
    "header_timeout": "seconds a request's headers may take from its first byte, else 408 "
                      "and closed",
    "min_body_rate": "an upload of N bytes must be in within header_timeout + N / this rate "
                     "of the request's first byte, else 408 (default %(default)s bytes/s)",
    "max_inflight_request_bytes": "upload bytes held at once by all requests; beyond, 503 "
                                  "(default 64 MiB)",
    "max_side": "the page downscales photos to this longer side before uploading",
    "max_live_sessions": "camera pages whose tracks are held; a new one beyond replaces the "
                         "least recently seen",
    "live_idle_timeout": "seconds after its last frame before a camera page's tracks are "
                         "forgotten",
    "max_live_tracks": "open tracks per camera page; faces beyond are answered untracked",
}
# What a value is, by the flag's last word (else a count): said when a value is refused.
_UNITS = {"bytes": "a byte count", "pixels": "a pixel count", "timeout": "seconds",
          "rate": "a rate in bytes/s", "side": "pixels"}


def add_limit_flags(parser, app_class):
    """One flag per bound, with the type and default of `app_class`'s keyword of that name."""
    defaults = inspect.signature(app_class).parameters
    for name, help_text in LIMIT_FLAGS.items():
        default = defaults[name].default
        what = _UNITS.get(name.rsplit("_", 1)[-1], "a count")
        kind = float if isinstance(default, float) or what == "seconds" else int
        if "(default" not in help_text:
            help_text += " (default %(default)s)"
        parser.add_argument(f"--{name}", type=arg_types.positive(kind, what), default=default,
                            help=help_text)
