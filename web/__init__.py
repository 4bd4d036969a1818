"""A web page for people who judge an age model by dropping photos on it.

- `app`: the page's own small HTTP server (CLI `python -m web.app`): serves the static page
  and forwards each photo to a TF Serving REST endpoint (TF Serving sends no CORS headers,
  so the browser talks to this process only), with bounded uploads, connections, concurrent
  predictions and timeouts.
- `backend`: the REST call to the model server and its failures as HTTP statuses.
- `photo_contract`: the `predict_photo` signature as the page uses it (names, request,
  per-face unpadding of the answer).
- `static/`: the page itself (plain HTML, CSS and JavaScript, no build step, nothing fetched
  from elsewhere).

Nothing here imports TensorFlow: the page's process starts in a fraction of a second and
stays small beside the model server.
"""
