"""A web page for people who judge an age model by dropping photos on it or by its camera.

- `app`: the page's own HTTP server on aiohttp (CLI `python -m web.app`): serves the static
  page and forwards each photo to a TF Serving REST endpoint (TF Serving sends no CORS
  headers, so the browser talks to this process only), with bounded uploads, upload bytes
  held, concurrent predictions and timeouts.
- `live`: the camera mode: a page's frames predicted as photos are, its people tracked and
  fused per page (`video.session`, the one layer below the page that it imports), bounded
  in pages, tracks and idle time.
- `connections`: how long a request may take to arrive and how many connections are open
  (aiohttp's protocol with a header deadline, a body deadline and a connection cap).
- `backend`: the REST call to the model server (its whole answer within the photo's
  deadline, size- and depth-bounded JSON, read by `agegender.photo_answers`) and its
  failures as HTTP statuses.
- `photo_contract`: the `predict_photo` request as the page sends it.
- `static/`: the page itself (plain HTML, CSS and JavaScript, no build step, nothing fetched
  from elsewhere).

Nothing here imports TensorFlow: the page's process starts in a fraction of a second and
stays small beside the model server.
"""
