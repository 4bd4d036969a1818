"""pipeline.batching: lists bounded by total weight and, when asked, by count."""
from pipeline import batching


def test_lists_are_bounded_by_weight_and_a_heavier_element_goes_alone():
    batches = batching.Batches(lambda x: x, max_weight=10)
    out = [batch for x in (3, 4, 5, 20, 1, 9) for batch in batches.add(x)]
    assert out == [[3, 4], [5], [20]]
    assert batches.rest() == [[1, 9]] and batches.rest() == []


def test_a_count_limit_closes_a_list_before_its_weight_does():
    batches = batching.Batches(len, max_weight=100, max_size=2)
    out = [batch for x in ("a", "b", "c", "d", "e") for batch in batches.add(x)]
    assert out == [["a", "b"], ["c", "d"]] and batches.rest() == [["e"]]
