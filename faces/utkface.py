"""UTKFace-style face crops as this package's source of real faces, placed in the records' splits.

Owns how `faces.template` (train split) and `testing.synthetic_faces` (test split) list crops and
learn which split of the records each one lands in. The split is not chosen here: it is
`agegender.splits` applied to the crop's decoded RGB pixels (`preprocessing.decode_rgb`),
exactly as the records job places them. So "train" here is the records' train split for the same `--split` fractions.
"""
import glob
import os

from agegender import splits

SHARED_UTKFACE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "..", "shared", "data", "utkface", "UTKFace")


def list_files(spec):
    """A directory (every file in it, recursively), a glob, or one file -> sorted paths."""
    if os.path.isdir(spec):
        paths = [os.path.join(root, name) for root, _, names in os.walk(spec) for name in names]
    else:
        paths = glob.glob(spec, recursive=True)
    return sorted(p for p in paths if os.path.isfile(p))


def decode(data):
    """Encoded bytes -> uint8 [H, W, 3] numpy pixels, decoded as the records job decodes them."""
    from agegender import preprocessing

    return preprocessing.decode_rgb(data).numpy()


def split_of_pixels(pixels, fractions=None):
    """The records' split of an image from its decoded pixels (uint8 [H, W, 3])."""
    return splits.split_of(splits.pixel_hash(pixels), fractions or splits.default_fractions())


class Crops:
    """Reads crops from `paths` on demand, remembering each one's split.

    `in_split(split, order)` yields (path, pixels) of the crops in `split` (None: every
    split), visiting `order` (indices into `paths`, default: all in order); undecodable
    files are skipped. Splits are remembered (pixels are not): a later pass decodes only
    the files it yields.
    """

    def __init__(self, paths, fractions=None):
        self.paths = list(paths)
        self.fractions = fractions or splits.default_fractions()
        self._split = {}  # path -> split, or None when undecodable

    def in_split(self, split=None, order=None):
        import tensorflow as tf

        for i in (range(len(self.paths)) if order is None else order):
            path = self.paths[i]
            if path in self._split and (self._split[path] is None or
                                        split not in (None, self._split[path])):
                continue
            try:
                with open(path, "rb") as f:
                    pixels = decode(f.read())
            except (OSError, tf.errors.OpError):
                self._split[path] = None
                continue
            self._split[path] = split_of_pixels(pixels, self.fractions)
            if split in (None, self._split[path]):
                yield path, pixels

    def visited(self, split=None):
        """Counts over the files looked at so far: in `split`, other_split, undecodable."""
        values = list(self._split.values())
        undecodable = values.count(None)
        inside = len(values) - undecodable if split is None else values.count(split)
        return {"in_split": inside, "other_split": len(values) - undecodable - inside,
                "undecodable": undecodable}
