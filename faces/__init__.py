"""Faces in real photos: detection and alignment in TensorFlow ops, so that a photo framed any
way reaches the model framed like the UTKFace crops it was trained on.

- `detector`: MTCNN as one `tf.function` (uint8 pixels or encoded bytes in; num_faces,
  boxes, landmarks, scores out, padded to max_faces); saves in a SavedModel.
- `networks`: PNet/RNet/ONet in `tf.nn` ops, weights read from the installed `mtcnn` package.
- `alignment`: five landmarks -> similarity transform onto the template -> aligned crop.
- `template`: the template (mean landmarks of the train crops), its file, and the CLI that
  computes it (`python -m faces.template`); the default is `utkface_template.json`.
- `photo`: detect + align, every face or the best one per photo (serving, records job).
- `boxes`: the box convention, overlap, matching detections to truth.
- `utkface`: listing crops and placing them in the records' splits.
"""
