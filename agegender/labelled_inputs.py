"""Labelled inputs: an input's labels (from its file name or a labels CSV) and the checks its
bytes pass before any decoder sees them, for the records job (`pipeline.transforms`), the
annotation job (`pipeline.photo_batches`) and the evaluation (`iter_labelled`).

- `Labeller`: labels from the file name (`agegender.names`) or a labels CSV.
- `check(source_id, data, labeller, max_pixels)`: empty, labels, the header's pixel limit
  and decode-cost bound (`agegender.image_header`) -> `Labels` or a `Skip`.
- `iter_labelled(spec, ...)`: listing, reading and checking in one Python loop (the
  evaluation); the Beam jobs run the same steps as DoFns.

Where the bytes come from, and the skip reasons, are `agegender.image_sources`'.
"""
import collections

from agegender import image_header, names
from agegender.image_sources import (EMPTY_FILE, IMAGE_TOO_COSTLY, IMAGE_TOO_LARGE, UNDECODABLE,
                                     Skip, iter_archive, list_inputs, read_input)


class Labeller:
    """Labels of an input: from its file name, or from a labels CSV row (by basename)."""

    def __init__(self, labels_csv_rows=None, min_age=names.DEFAULT_MIN_AGE,
                 max_age=names.DEFAULT_MAX_AGE):
        self._csv = labels_csv_rows
        self._min_age, self._max_age = min_age, max_age

    def __call__(self, source_id):
        """`names.Labels`; raises `names.LabelError` (its `reason` is the skip reason)."""
        if self._csv is None:
            return names.parse_name(source_id, self._min_age, self._max_age)
        name = names.basename(source_id)
        return names.labels_from_csv_row(name, self._csv.get(name), self._min_age,
                                         self._max_age)


def check(source_id, data, labeller, max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """The checks before any decoder sees an input's bytes -> its `Labels`, or a `Skip`.

    The header is read first: a small file can declare enough pixels to exhaust a worker's
    memory when decoded (`image_header`)."""
    if not data:
        return Skip(source_id, EMPTY_FILE, "0 bytes")
    try:
        labels = labeller(source_id)
    except names.LabelError as e:
        return Skip(source_id, e.reason, str(e))
    try:
        image_header.check(data, max_pixels)
    except image_header.ImageTooCostly as e:  # before its base class, ImageTooLarge
        return Skip(source_id, IMAGE_TOO_COSTLY, str(e))
    except image_header.ImageTooLarge as e:
        return Skip(source_id, IMAGE_TOO_LARGE, str(e))
    except image_header.NotAnImage as e:
        return Skip(source_id, UNDECODABLE, str(e))
    return labels


Labelled = collections.namedtuple("Labelled", ["source_id", "data", "labels"])


def iter_labelled(spec, labeller=None, follow_symlinks=False,
                  max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """Every input of `spec` in order: a `Labelled` (bytes that passed `check`) or a `Skip`.
    Raises `InputError` when the spec names nothing usable."""
    labeller = labeller or Labeller()
    for item in list_inputs(spec, follow_symlinks):
        if item.is_archive:
            members = iter_archive(item, follow_symlinks)
        else:
            members = [read_input(item, follow_symlinks)]
            if not isinstance(members[0], Skip):
                members = [(item.source_id, members[0])]
        for member in members:
            if isinstance(member, Skip):
                yield member
                continue
            source_id, data = member
            result = check(source_id, data, labeller, max_pixels)
            yield result if isinstance(result, Skip) else Labelled(source_id, data, result)
