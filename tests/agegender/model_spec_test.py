"""The trainer/export contract: spec round trip and validation."""
import pytest

from agegender import heads
from agegender import model_spec as ms


def test_spec_round_trip_and_validation():
    spec = ms.ModelSpec(type="classification", range_mode=True, predict_gender=True, img_dim=64)
    again = ms.ModelSpec.from_json(spec.to_json())
    assert again == spec and again.age_output == heads.RangeHead.output
    assert ms.ModelSpec(type="regression").age_output == heads.RegressionHead.output
    assert ms.ModelSpec().age_output == heads.DistributionHead.output
    with pytest.raises(ValueError):
        ms.ModelSpec(type="ranking")
    with pytest.raises(ValueError):
        ms.ModelSpec(type="regression", range_mode=True)


def test_unknown_fields_of_newer_specs_are_ignored():
    text = ms.ModelSpec(img_dim=64).to_json().replace('"alpha"', '"future_field": 1, "alpha"')
    assert ms.ModelSpec.from_json(text).img_dim == 64
