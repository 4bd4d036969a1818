"""One age group's bias pooled over several evaluation reports, against its target.

    python -m evaluation.pooled --input=reports/val/metrics.json,reports/test/metrics.json \
        [--group=60-69] [--target=3]

A decade of ~100 faces has a signed error whose standard error is ~0.9 year, so one split
alone cannot say whether a bias of -3.8 misses a +-3 target or is +-3 seen through sampling
noise. The target is stated with that error (issue 27, item 5): the signed error of the
group pooled over the reports (validation and test) is within +-`--target` years, or
within 2 standard errors of it. `--group` names a decade (`per_decade`) or an age band
(`per_age_band`) of the reports' metrics.json (`python -m evaluation.evaluate`).
"""
if __name__ == "__main__":  # as every command: quiet before any library import
    from agegender import console
    console.quiet()

import argparse
import json
import sys

from agegender import metrics

SECTIONS = ("per_decade", "per_age_band")


def group_entry(report, group):
    """The group's entry of one metrics.json dict, from the first section that has it."""
    for section in SECTIONS:
        if group in report.get(section, {}):
            return report[section][group]
    return None


def meets_target(pooled, target):
    """Within +-target, or within 2 standard errors of it."""
    bias = abs(pooled["mean_signed_error"])
    se = pooled.get("signed_error_standard_error") or 0.0
    return bias <= target or bias - target <= 2 * se


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True,
                   help="comma-separated metrics.json files (e.g. validation,test)")
    p.add_argument("--group", default="60-69", help="a decade or an age band")
    p.add_argument("--target", type=float, default=3.0, help="years either side of 0")
    args = p.parse_args(argv)
    if args.target <= 0:
        p.error("--target: a positive number of years")
    entries = []
    for path in [x for x in args.input.split(",") if x]:
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            p.error(f"--input: {path}: {e}")
        entry = group_entry(report, args.group)
        if entry is None:
            p.error(f"--input: {path} has no group {args.group!r} in {' or '.join(SECTIONS)}")
        entries.append(entry)
        print(f"{path}: {args.group} n={entry['count']} signed {entry['mean_signed_error']:+.2f}"
              f" +- {entry.get('signed_error_standard_error') or 0:.2f}")
    pooled = metrics.pooled(entries)
    ok = meets_target(pooled, args.target)
    print(f"pooled: {args.group} n={pooled['count']} signed {pooled['mean_signed_error']:+.2f}"
          f" +- {pooled['signed_error_standard_error'] or 0:.2f} (SE); target +-{args.target:g} "
          f"or within 2 SE of it: {'met' if ok else 'missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
