"""File-name and CSV label parsing, including UTKFace's real quirks."""
import pytest

from agegender import names
from agegender.names import LabelError, Labels


@pytest.mark.parametrize("name,expected", [
    ("25_1_2_20170116174525125.jpg.chip.jpg", Labels(25, 1, 2)),
    ("some/dir/25_1_2_20170116174525125.jpg.chip.jpg", Labels(25, 1, 2)),
    ("24_0_1_20170116220224657", Labels(24, 0, 1)),  # no extension
    ("39_1_20170116174525125.jpg.chip.jpg", Labels(39, 1, -1)),  # race missing
    ("1234_57_0.jpg", Labels(57, 0, -1)),  # the seed's renamed files
    ("0_0_0_20170110212345678.jpg", Labels(0, 0, 0)),
    ("116_1_4_20170110212345678.png", Labels(116, 1, 4)),
])
def test_accepted_names(name, expected):
    assert names.parse_name(name) == expected


@pytest.mark.parametrize("name,reason", [
    ("face.jpg", names.BAD_NAME),
    ("1_2.jpg", names.BAD_NAME),
    ("1_2_3_4_5.jpg", names.BAD_NAME),
    ("x_1_2_20170116174525125.jpg", names.BAD_AGE),
    ("-3_1_2_20170116174525125.jpg", names.BAD_AGE),
    ("25_3_2_20170116174525125.jpg", names.BAD_GENDER),
    ("25_m_2_20170116174525125.jpg", names.BAD_GENDER),
    ("25_1_7_20170116174525125.jpg", names.BAD_RACE),
    ("117_1_2_20170116174525125.jpg", names.AGE_OUT_OF_RANGE),
    ("", names.BAD_NAME),
])
def test_rejected_names_carry_their_reason(name, reason):
    with pytest.raises(LabelError) as err:
        names.parse_name(name)
    assert err.value.reason == reason


def test_age_range_is_configurable():
    assert names.parse_name("130_0_0_20170116174525125.jpg", max_age=130).age == 130
    with pytest.raises(LabelError):
        names.parse_name("5_0_0_20170116174525125.jpg", min_age=10)


def test_labels_csv():
    rows = names.read_labels_csv("file,age,gender,race\nimgs/a.jpg,30,1,2\nb.png,7\nc.jpg,x\n"
                                 "d.jpg,40,,3\n\n# comment\n")
    assert names.labels_from_csv_row("a.jpg", rows["a.jpg"]) == Labels(30, 1, 2)
    assert names.labels_from_csv_row("b.png", rows["b.png"]) == Labels(7, -1, -1)
    assert names.labels_from_csv_row("d.jpg", rows["d.jpg"]) == Labels(40, -1, 3)
    with pytest.raises(LabelError) as err:
        names.labels_from_csv_row("c.jpg", rows["c.jpg"])
    assert err.value.reason == names.BAD_AGE
    with pytest.raises(LabelError) as err:
        names.labels_from_csv_row("zzz.jpg", rows.get("zzz.jpg"))
    assert err.value.reason == names.NOT_IN_LABELS
