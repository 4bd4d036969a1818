"""Batches of a bundle's elements by weight, for the DoFns that decode or predict on lists:
the records job's images (`pipeline.transforms`) and the annotation job's photos
(`pipeline.photo_batches`). Each says what an element weighs; the grouping is here."""


class Batches:
    """Collects elements into lists of total `weight(element)` <= `max_weight` and, when
    `max_size` is given, of at most `max_size` elements (a heavier element goes alone):
    `add` and `rest` return the lists that are complete."""

    def __init__(self, weight, max_weight, max_size=None):
        self._weigh, self._max_weight, self._max_size = weight, max_weight, max_size
        self._batch, self._weight = [], 0

    def add(self, element):
        weight = self._weigh(element)
        full = []
        if self._batch and (self._weight + weight > self._max_weight
                            or self._max_size is not None
                            and len(self._batch) >= self._max_size):
            full = [self._batch]
            self._batch, self._weight = [], 0
        self._batch.append(element)
        self._weight += weight
        return full

    def rest(self):
        batch, self._batch, self._weight = self._batch, [], 0
        return [batch] if batch else []
