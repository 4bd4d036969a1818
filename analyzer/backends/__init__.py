"""The analyzer's backends. Each has `info` (agegender.ModelInfo), `photos(encoded) ->
list[list[Face]]` (predict_photo), `crops(encoded) -> list[Face]` (serving_default) and
`close()`; a photo the model refuses raises `ImageError`, a failing server `ServerError`.
Each module imports its runtime (TensorFlow, LiteRT, gRPC) itself: only the backend in use
is loaded."""
