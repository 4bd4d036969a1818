"""The project's shared core: record schema, age labels, name parsing and image preprocessing.

Everything that the Beam job, the trainer, the export and the serving code must agree on
lives here and only here, so that training and serving can never disagree:

- `schema`: feature keys, the `tf.io` parsing spec, the TFDS feature description.
- `age_histogram`: the 101-bin Gaussian age label (NumPy for the writer, TF for in-graph).
- `names`: labels from UTKFace-style file names and from label CSVs.
- `preprocessing`: encoded image bytes -> model input pixels.
"""
