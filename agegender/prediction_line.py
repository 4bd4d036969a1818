"""The one-line answer per image of every predict mode (trainer `--load` and the serving client).

    <file>: Predicted age: X[ ± S (80%: A-B)], true age: Y[, predicted gender: G (p), true gender: G]

as the original project printed it, with the spread when the model exports one (S: the
standard deviation, A-B: the 80% interval); true values come from the file name.
"""
from agegender import names, schema


def true_labels(source):
    """Labels from the file name, or None when the name carries none."""
    try:
        return names.parse_name(source)
    except names.LabelError:
        return None


def prediction_line(source, age, gender=None, gender_probability=None, age_std=None,
                    interval=None):
    """`gender` is a class index (0 male, 1 female) or None for models without that head;
    `age_std` and `interval` (first, last year) are the spread, None when not exported."""
    labels = true_labels(source)
    spread = "" if age_std is None else f" ± {age_std:.0f}"
    if interval is not None:
        spread += f" (80%: {interval[0]:.0f}-{interval[1]:.0f})"
    line = f"{names.basename(source)}: Predicted age: {age:.1f}{spread}, true age: "
    line += str(labels.age) if labels else "unknown"
    if gender is not None:
        conf = "" if gender_probability is None else f" ({gender_probability:.2f})"
        line += f", predicted gender: {schema.GENDERS[gender]}{conf}, true gender: "
        line += (schema.GENDERS[labels.gender]
                 if labels and labels.gender != schema.UNKNOWN else "unknown")
    return line
