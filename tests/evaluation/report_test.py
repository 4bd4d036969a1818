"""evaluation.report: the age-band table of report.html."""
from agegender import metrics
from evaluation import report


def test_age_band_table_shows_each_band_with_its_bias_and_the_compared_model():
    ours = metrics.full_report([2, 3, 12, 17, 65], [4, 5, 15, 17, 60])
    other = metrics.full_report([2, 3], [1, 2])
    html = "\n".join(report._age_band_section(ours, other, ["ours", "other"]))
    assert "Per age band" in html and "bias (other)" in html
    for band in ("0-4", "10-14", "15-19", "60-69"):
        assert f">{band}<" in html
    assert "5-9" not in html  # no face in it
    assert report._age_band_section({}, None, ["ours"]) == []
