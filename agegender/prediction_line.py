"""The one-line answer per image of every predict mode (trainer `--load` and the serving client).

    <file>: Predicted age: X[ ± S (80%: A-B)], true age: Y[, predicted gender: G (p), true gender: G]

as the original project printed it, with the spread when the model exports one (S: the
standard deviation, A-B: the 80% interval); true values come from the file name.

Photos (`--photos`: faces found by the predict_photo path) get one line per face, and one
line for a photo without a face:

    <file> face i/n at (x1, y1)-(x2, y2): Predicted age: X ± S (80%: A-B)[, true age: Y],
        predicted gender: G (p)[, true gender: G]
    <file>: no face found

The labels in a photo's name belong to its largest face (`photo_answers.largest_face`), so
only that face's line shows them. `face_label` is the short text drawn beside a face.

Every predict mode hands over its answers as `agegender.Face`s (`agegender.photo_answers`
reads them from the model's outputs), so what is printed, and how, is decided here only.
"""
from agegender import names, photo_answers, schema
from agegender import serving_contract as contract
from agegender.results import GENDERS

NO_FACE = "no face found"


def true_labels(source):
    """Labels from the file name, or None when the name carries none."""
    try:
        return names.parse_name(source)
    except names.LabelError:
        return None


def _spread(age_std, interval):
    spread = "" if age_std is None else f" ± {age_std:.0f}"
    if interval is not None:
        spread += f" (80%: {interval[0]:.0f}-{interval[1]:.0f})"
    return spread


def _answer(age, gender, gender_probability, age_std, interval, labels, show_truth):
    """'Predicted age: ...' up to the end of the line; the true values only if `show_truth`."""
    line = f"Predicted age: {age:.1f}{_spread(age_std, interval)}"
    if show_truth:
        line += ", true age: " + (str(labels.age) if labels else "unknown")
    if gender is not None:
        conf = "" if gender_probability is None else f" ({gender_probability:.2f})"
        line += f", predicted gender: {GENDERS[gender]}{conf}"
        if show_truth:
            line += ", true gender: " + (GENDERS[labels.gender]
                                         if labels and labels.gender != schema.UNKNOWN
                                         else "unknown")
    return line


def _read(face):
    """(age, gender index, its probability, age_std, 80% interval) of a `Face`; None for
    what the model does not export."""
    return (face.age, face.gender_index, face.gender_probability, face.age_std,
            face.age_interval_80)


def prediction_line(source, age, gender=None, gender_probability=None, age_std=None,
                    interval=None):
    """`gender` is a class index (0 male, 1 female) or None for models without that head;
    `age_std` and `interval` (first, last year) are the spread, None when not exported."""
    return f"{names.basename(source)}: " + _answer(
        age, gender, gender_probability, age_std, interval, true_labels(source), True)


def answer_line(source, face):
    """The line of one image from its answer (a `Face`, e.g. of an aligned crop)."""
    return prediction_line(source, *_read(face))


def face_line(source, index, count, box, age, gender=None, gender_probability=None,
              age_std=None, interval=None, labelled=False):
    """One face (number `index` from 0, of `count`) of a photo, with its box (x1, y1, x2,
    y2 pixels); `labelled`: the face the name's labels belong to (the largest)."""
    x1, y1, x2, y2 = box
    where = f"face {index + 1}/{count} at ({x1:.0f}, {y1:.0f})-({x2:.0f}, {y2:.0f})"
    labels = true_labels(source) if labelled else None
    return f"{names.basename(source)} {where}: " + _answer(
        age, gender, gender_probability, age_std, interval, labels, labelled and bool(labels))


def no_face_line(source):
    return f"{names.basename(source)}: {NO_FACE}"


def photo_lines(source, faces):
    """The lines of one photo: one per `Face` of `faces` (in the detector's order), or the
    no-face line."""
    if not faces:
        return [no_face_line(source)]
    largest = photo_answers.largest_face(faces)
    return [face_line(source, i, len(faces), face.box, *_read(face), labelled=i == largest)
            for i, face in enumerate(faces)]


def face_label(face):
    """Short text drawn beside a `Face`: '31 ±5 F'."""
    age, gender, _, age_std, _ = _read(face)
    text = f"{age:.0f}"
    if age_std is not None:
        text += f" ±{age_std:.0f}"
    if gender is not None:
        text += f" {contract.GENDER_LETTERS[gender]}"
    return text
