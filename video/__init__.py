"""Video: every person in a clip tracked, with one steady age per person (docs/video.md).

- `io`: clips and image sequences in, an annotated copy out (PyAV), with the project's limits.
- `tracking`: per-frame boxes -> stable track ids (a Hungarian matcher over boxes, scipy).
- `fusion`: a track's per-frame calibrated age distributions and gender probabilities ->
  one tempered answer whose interval narrows as evidence accumulates; the temper's fit.
- `face_tracks`: the tracker and one fusion per track; what is reported of a track.
- `drawing`: boxes, track ids and fused answers drawn on frames.
- `annotate`: the clip loop and the thin CLI (`python -m video.annotate`).
- `session`: a bounded per-session tracker (bounded tracks, idle expiry) for a live page.

No web/ import here: the web page may import this package, never the reverse.
"""
