"""Labels from file names and label CSVs.

Accepted names (everything after the first '.' is ignored, so `x.jpg.chip.jpg`, `x.png`
and a name without extension all work):

  UTKFace     [age]_[gender]_[race]_[datetime]     e.g. 25_1_2_20170116174525125.jpg.chip.jpg
  UTKFace     [age]_[gender]_[datetime]            (race missing: a few UTKFace files)
  seed        [id]_[age]_[gender]                  the original project's renamed files

A three-field name is UTKFace's when its last field is a datetime (8 or more digits),
and the seed's otherwise. Anything else raises `LabelError` with a reason code that the
Beam job counts and reports.
"""
import csv
import dataclasses
import io
import os
import posixpath

from agegender import errors, schema

# Reason codes, shared with the Beam job's report and counters.
BAD_NAME = "bad_name"
BAD_AGE = "bad_age"
AGE_OUT_OF_RANGE = "age_out_of_range"
BAD_GENDER = "bad_gender"
BAD_RACE = "bad_race"
NOT_IN_LABELS = "not_in_labels_csv"

DEFAULT_MIN_AGE = 0
DEFAULT_MAX_AGE = 116  # the oldest UTKFace label


class LabelError(errors.ReasonError, ValueError):
    """A name or CSV row that gives no usable label; `reason` is one of the codes above."""


@dataclasses.dataclass(frozen=True)
class Labels:
    age: int
    gender: int = schema.UNKNOWN
    race: int = schema.UNKNOWN


def _int_field(value, reason, what, name):
    value = value.strip()
    if not value.isdigit():
        raise LabelError(reason, f"{name!r}: {what} {value!r} is not a non-negative integer")
    return int(value)


def validate(age, gender, race, name, min_age=DEFAULT_MIN_AGE, max_age=DEFAULT_MAX_AGE):
    """Checks label values; returns `Labels` or raises `LabelError`."""
    if not min_age <= age <= max_age:
        raise LabelError(AGE_OUT_OF_RANGE, f"{name!r}: age {age} outside [{min_age}, {max_age}]")
    if gender not in (schema.UNKNOWN, 0, 1):
        raise LabelError(BAD_GENDER, f"{name!r}: gender {gender} is not 0 (male) or 1 (female)")
    if race != schema.UNKNOWN and not 0 <= race < len(schema.RACES):
        raise LabelError(BAD_RACE, f"{name!r}: race {race} is not in 0..{len(schema.RACES) - 1}")
    return Labels(age, gender, race)


def basename(path):
    """The file name of a local path, a URL-like path or an archive member."""
    return posixpath.basename(path.replace(os.sep, "/"))


def parse_name(path, min_age=DEFAULT_MIN_AGE, max_age=DEFAULT_MAX_AGE):
    """Labels from a UTKFace or seed file name (directories in `path` are ignored)."""
    name = basename(path)
    stem = name.split(".", 1)[0]
    fields = stem.split("_")
    if len(fields) == 4:
        age_s, gender_s, race_s = fields[0], fields[1], fields[2]
    elif len(fields) == 3 and len(fields[2]) >= 8 and fields[2].isdigit():
        age_s, gender_s, race_s = fields[0], fields[1], None
    elif len(fields) == 3:
        age_s, gender_s, race_s = fields[1], fields[2], None
    else:
        raise LabelError(BAD_NAME, f"{name!r}: expected [age]_[gender]_[race]_[datetime] or "
                                   f"[id]_[age]_[gender], got {len(fields)} field(s)")
    age = _int_field(age_s, BAD_AGE, "age", name)
    gender = _int_field(gender_s, BAD_GENDER, "gender", name)
    race = schema.UNKNOWN if race_s is None else _int_field(race_s, BAD_RACE, "race", name)
    return validate(age, gender, race, name, min_age, max_age)


def read_labels_csv(text):
    """Parses a labels CSV (`file,age[,gender][,race]`, optional header) into {basename: row}.

    Values are kept as strings and validated per image by `labels_from_csv_row`, so one
    bad row skips one image instead of failing the job. Keys are file basenames.
    """
    rows = {}
    for i, row in enumerate(csv.reader(io.StringIO(text))):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if i == 0 and row[0].strip().lower() in ("file", "filename", "path", "image"):
            continue
        rows[basename(row[0].strip())] = [v.strip() for v in row[1:]]
    return rows


def labels_from_csv_row(name, row, min_age=DEFAULT_MIN_AGE, max_age=DEFAULT_MAX_AGE):
    """Labels for one image from its CSV row (`row` from `read_labels_csv`, or None)."""
    if row is None:
        raise LabelError(NOT_IN_LABELS, f"{name!r} has no row in the labels CSV")
    if not row or not row[0]:
        raise LabelError(BAD_AGE, f"{name!r}: the labels CSV gives no age")
    age = _int_field(row[0], BAD_AGE, "age", name)
    gender = schema.UNKNOWN
    race = schema.UNKNOWN
    if len(row) > 1 and row[1] != "":
        gender = _int_field(row[1], BAD_GENDER, "gender", name)
    if len(row) > 2 and row[2] != "":
        race = _int_field(row[2], BAD_RACE, "race", name)
    return validate(age, gender, race, name, min_age, max_age)
