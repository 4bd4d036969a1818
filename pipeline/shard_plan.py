"""The records job's shard plan: how many shards each split gets, and which shard each face
goes to, as a part of the job's Beam graph (`assign_shards`).

A face's split and shard come from its content hash alone (`agegender.splits`), so they do
not depend on the runner, the order or the number of workers; a split's shard count comes
from its total bytes (`writer.num_shards`). Every split with a fraction gets a count (an
empty split: one empty shard).
"""
import apache_beam as beam

from agegender import splits
from pipeline import writer

# Per split, the least number of buckets in the shard plan's join (see _with_bucket).
MIN_PLAN_BUCKETS = 16


# Faces travel as plain tuples (see transforms.Face): [0] is the sha256, [-1] the example.
def _with_split(face, fractions):
    return splits.split_of(face[0], fractions), face


def _split_size(keyed):
    split, face = keyed
    return split, (1, len(face[-1]))


def _sum_pairs(pairs):
    count = nbytes = 0
    for c, b in pairs:
        count, nbytes = count + c, nbytes + b
    return count, nbytes


def _split_plan(split_size, target_shard_bytes, min_shards):
    split, (count, nbytes) = split_size
    return split, writer.num_shards(count, nbytes, target_shard_bytes, min_shards)


def _with_shard(keyed, plan):
    split, face = keyed
    num_shards = plan[split]
    return (split, splits.shard_of(face[0], num_shards), num_shards), face


# Without side inputs (see assign_shards), a split's shard count meets its faces in a
# GroupByKey: the faces go to buckets by their hash, the count to every bucket of the split;
# there each face gets its shard. The buckets only bound the memory of that step (a bucket's
# faces are held at once); they never change a record.
def _with_bucket(keyed, num_buckets):
    split, face = keyed
    return (split, splits.bucket_of(face[0], num_buckets)), (False, face)


def _to_buckets(split_plan, num_buckets):
    split, num_shards = split_plan
    for bucket in range(num_buckets):
        yield (split, bucket), (True, num_shards)


def _with_shard_in_bucket(group):
    (split, _), values = group
    values = list(values)
    num_shards = next(value for is_plan, value in values if is_plan)
    for is_plan, face in values:
        if not is_plan:
            yield (split, splits.shard_of(face[0], num_shards), num_shards), face


def num_buckets(inputs, target_shard_bytes):
    """Buckets per split of the shard plan's join: about one shard's worth of input each."""
    listed = sum(f.size or 0 for f in inputs)
    return max(MIN_PLAN_BUCKETS, -(-listed // target_shard_bytes))


def assign_shards(p, faces, fractions, target_shard_bytes, min_shards, inputs,
                  side_inputs=True):
    """(keyed, plan): `faces` keyed by (split, shard, number of shards), and the plan, a
    PCollection of (split, number of shards) with every split of `fractions` that has a
    fraction above 0.

    side_inputs: the plan reaches the faces as a side input (True), or through a GroupByKey
    over buckets of about one shard's worth of `inputs` (False; see
    `records_graph.build_pipeline`). Same keys either way.
    """
    by_split = faces | "AssignSplit" >> beam.Map(_with_split, fractions)
    no_faces = [(split, (0, 0)) for split, fraction in fractions if fraction > 0]
    plan = ((by_split | "SizeOf" >> beam.Map(_split_size),
             p | "EverySplit" >> beam.Create(no_faces))
            | "SizesAndZeros" >> beam.Flatten()
            | "SplitSizes" >> beam.CombinePerKey(_sum_pairs)
            | "PlanShards" >> beam.Map(_split_plan, target_shard_bytes, min_shards))
    if side_inputs:
        keyed = by_split | "AssignShard" >> beam.Map(_with_shard, beam.pvalue.AsDict(plan))
    else:
        buckets = num_buckets(inputs, target_shard_bytes)
        keyed = ((by_split | "ToBuckets" >> beam.Map(_with_bucket, buckets),
                  plan | "PlanToBuckets" >> beam.FlatMap(_to_buckets, buckets))
                 | "WithPlan" >> beam.Flatten()
                 | "JoinPlan" >> beam.GroupByKey()
                 | "AssignShard" >> beam.FlatMap(_with_shard_in_bucket))
    return keyed, plan
