"""The input's configuration: what the reader (`trainer.input_pipeline.InputReader`) and the
training augmentation need besides the split, one object each instead of long argument
lists. Built once by the trainer from its flags (`trainer.flags.augment_config`), and by
tests and benchmarks; the reader and parser only read them.
"""
import dataclasses

from agegender import age_prior, records, schema


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (flags of the same names in `trainer.flags`)."""
    enabled: bool = True
    # Random crop: side as a fraction of the frame, and centre shift as a fraction of it.
    crop_fraction: tuple = (0.85, 1.0)
    max_shift: float = 0.05
    brightness: float = 20.0  # +- pixel levels
    contrast: tuple = (0.8, 1.2)
    blur_probability: float = 0.2
    blur_scale: tuple = (0.35, 0.7)  # blur = down to this fraction of the side and back up
    # The training frame is at most img_dim * source_margin, so crops take real pixels.
    source_margin: float = 1.25
    # Share of images given one of the photo degradations users' pictures carry
    # (agegender.degradations: grayscale, sepia, faded, JPEG, low resolution, side light).
    degrade_probability: float = 0.0
    # The low-resolution degradation: down to this fraction of the side and back up, drawn
    # log-uniformly, so a face 20-25% of the frame wide (32 px of a 160 px record, the
    # robustness benchmark's worst case) is as likely as one 40-50% wide.
    low_res_scale: tuple = (0.15, 0.5)
    # Share of images made old scanned prints (agegender.old_print: every kind of damage at
    # once), each at a severity drawn uniformly from this range.
    old_print_probability: float = 0.0
    old_print_severity: tuple = (0.25, 1.0)
    # Also hand over the old-printed faces as they were just before the composite (same
    # crop, flip and colour jitter), for the consistency term (`trainer.consistency`).
    old_print_pairs: bool = False


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Everything the reader needs besides the split: one object instead of long argument
    lists, built once by the trainer (and by tests and benchmarks)."""
    records_dir: str
    batch_size: int = 64
    cache: str = ""  # '' off, 'memory', or a file path prefix
    shuffle_buffer: int = 4096
    seed: int = None
    num_workers: int = 1
    # Same order and same augmentation every run (with a seed): a little slower, since
    # parallel steps wait for each other. `--seed` turns it on (trainer.task).
    deterministic: bool = False
    augment: AugmentConfig = AugmentConfig()
    records_age_deviation: float = None  # the records' label deviation (metadata)
    records_image_size: int = None  # the records' image side (metadata)
    # Age loss weight per decade (0-9, ..., 90-99, 100+; `agegender.age_prior`), or None:
    # every face weighs 1.
    decade_weights: tuple = None

    @classmethod
    def from_records(cls, records_dir, rare_age_weight_power=0.0, rare_age_weight_max=None,
                     **kwargs):
        """A config whose records_* fields come from the records' own report; with
        `rare_age_weight_power` p > 0, faces of a decade holding n of the train split's
        faces weigh (n / mean n) ** -p, normalised to a mean weight of 1 per face, so rare
        ages (teenagers, the old) pull harder on the model, at most `rare_age_weight_max`
        times the mean face."""
        meta = records.metadata(records_dir)
        weights = None
        if rare_age_weight_power:
            weights = age_prior.decade_weights(age_prior.train_decade_counts(records_dir),
                                               rare_age_weight_power, rare_age_weight_max)
        return cls(records_dir=records_dir,
                   records_age_deviation=meta.get(schema.META_AGE_DEVIATION),
                   records_image_size=meta.get(schema.META_IMAGE_SIZE),
                   decade_weights=weights, **kwargs)
