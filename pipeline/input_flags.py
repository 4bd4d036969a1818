"""The input flags both Beam jobs share (`pipeline.build_records`, `pipeline.annotate`): the
same inputs are read with the same limits and link rules by either job, so one definition."""
from agegender import arg_types, image_header
from pipeline.records_graph import DEFAULT_ARCHIVE_SPREAD_MB


def add_input_flags(parser, outputs):
    """--max_image_pixels, --follow_symlinks and --archive_spread_mb; `outputs` names what the
    job writes ("records", "rows"), which the archive spread never changes."""
    arg_types.add_max_image_pixels(parser, image_header.DEFAULT_MAX_PIXELS)
    parser.add_argument("--follow_symlinks", action="store_true",
                        help="follow symbolic links in a local --input (to regular files and "
                             "directories only); by default they are skipped as "
                             "not_a_regular_file")
    parser.add_argument("--archive_spread_mb", type=float, default=DEFAULT_ARCHIVE_SPREAD_MB,
                        help="archive member MB (all archives together) spread to other "
                             "workers before decoding; later members are handled by the "
                             f"worker reading the archive. Bounds memory; never changes the "
                             f"{outputs} (default %(default)s)")
