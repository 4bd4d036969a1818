"""agegender.decades: the one decade index and name, in NumPy and in TF alike."""
import numpy as np
import tensorflow as tf

from agegender import decades


def test_index_and_name_by_hand():
    ages = [0, 9, 10, 19.9, 59, 60, 99, 100, 116, -3]
    assert decades.index(ages).tolist() == [0, 0, 1, 1, 5, 6, 9, 10, 10, 0]
    assert [decades.name_of_age(a) for a in (0, 9, 10, 69, 99, 100, 116)] == [
        "0-9", "0-9", "10-19", "60-69", "90-99", "100+", "100+"]
    assert [decades.name(d) for d in range(decades.NUM_DECADES)][-2:] == ["90-99", "100+"]


def test_tensorflow_ops_give_the_same_index():
    ages = np.arange(0, 121, dtype=np.int64)
    graph = decades.index(tf.constant(ages), xp=tf).numpy()
    assert graph.tolist() == decades.index(ages).tolist()
