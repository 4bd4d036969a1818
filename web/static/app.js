// The page: photos in, one box and label per face out. Plain JavaScript, no dependencies.
//
// Each photo is drawn onto a canvas upright (createImageBitmap applies the EXIF orientation,
// which the model's decoder does not), scaled down to the server's max_side, and sent as
// that JPEG; the page shows the very JPEG it sent, so the model's boxes (pixels of the sent
// photo) land on the faces shown. Photos are sent one at a time, so a drop of fifty photos
// never floods the model server.
//
// The camera mode (LiveCamera) sends the camera's frames, downscaled to the server's
// live.max_side, at most live.max_frames_per_second and one at a time, under a random
// session token; the server tracks each person across this page's frames and answers each
// face with its track's number and fused age and gender, drawn over the live video.
"use strict";

(() => {
  const config = {max_request_bytes: 16 << 20, max_side: 1600, jpeg_quality: 0.9,
                  timeout_seconds: 10, live: {max_side: 640, max_frames_per_second: 5}};
  const ready = fetch("api/config", {cache: "no-store"})
    .then((r) => (r.ok ? r.json() : {}))
    .then((c) => Object.assign(config, c))
    .catch(() => {});  // the defaults above; a dead server shows up on the first photo

  const GENDER_NAMES = {M: "male", F: "female"};
  const HEADLINES = {
    "not-image": "This file is not a photo the page can read (JPEG or PNG).",
    "too-large": "This photo is too large.",
    "unreadable": "The model could not read this photo.",
    "backend-error": "The model server answered with an error.",
    "backend-down": "The model server is not available right now. Try again when it is back.",
    "backend-slow": "The model server took too long to answer. Try again.",
    "page-down": "This page's server did not answer. Is it still running?",
    "error": "Something went wrong.",
  };
  const RETRYABLE = new Set(["backend-error", "backend-down", "backend-slow", "page-down",
                             "error"]);

  class PageError extends Error {
    constructor(kind, detail) {
      super(detail);
      this.kind = kind;
    }
  }

  function kindOfStatus(status) {
    if (status === 413) return "too-large";
    if (status === 415) return "not-image";
    if (status === 400) return "unreadable";
    if (status === 503) return "backend-down";
    if (status === 504) return "backend-slow";
    if (status === 502) return "backend-error";
    return "error";
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  const fmt = (x) => (x == null ? "?" : String(Math.round(x)));
  const pct = (p) => `${Math.round(p * 100)}%`;

  function ageText(face) {
    return face.age_std == null ? fmt(face.age) : `${fmt(face.age)} ± ${fmt(face.age_std)}`;
  }

  function genderText(face, long) {
    if (!face.gender) return null;
    const name = long ? GENDER_NAMES[face.gender] || face.gender : face.gender;
    return face.gender_probability == null ? name : `${name} ${pct(face.gender_probability)}`;
  }

  function boxLabel(face) {
    return [ageText(face), genderText(face, false)].filter(Boolean).join(" · ");
  }

  function faceDescription(face, i) {
    let text = `Face ${i + 1}: age ${ageText(face)}`;
    const interval = face.age_interval_80;
    if (interval && interval[0] != null && interval[1] != null) {
      text += ` (80%: ${fmt(interval[0])}–${fmt(interval[1])})`;
    }
    const gender = genderText(face, true);
    if (gender) text += `, ${gender}`;
    return text;
  }

  // POSTs a JPEG to this page's server -> the answer's faces; a PageError otherwise.
  async function postImage(url, blob) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: {"Content-Type": "image/jpeg"},
        body: blob,
        // The server answers within its timeout; this only catches a hung connection.
        signal: AbortSignal.timeout((config.timeout_seconds + 20) * 1000),
      });
    } catch (e) {
      throw new PageError("page-down", String(e.message || e));
    }
    let data = {};
    try {
      data = await response.json();
    } catch (e) { /* not JSON: the status says enough */ }
    if (!response.ok) {
      throw new PageError(kindOfStatus(response.status),
        data.error || `HTTP ${response.status} ${response.statusText}`);
    }
    if (!Array.isArray(data.faces)) throw new PageError("error", "The answer has no faces list.");
    return data.faces;
  }

  // A face's box over a picture of width x height pixels, placed in % of it (so it stays on
  // the face at any displayed size), with its label.
  function faceBox(face, width, height, label, title) {
    const [x1, y1, x2, y2] = face.box.map((v) => v ?? 0);
    const left = Math.max(0, x1) / width, top = Math.max(0, y1) / height;
    const right = Math.min(width, x2) / width, bottom = Math.min(height, y2) / height;
    const box = el("div", {class: "face-box", title}, el("span", {class: "label"}, label));
    if (top < 0.08) box.classList.add("near-top");
    box.style.left = `${left * 100}%`;
    box.style.top = `${top * 100}%`;
    box.style.width = `${Math.max(0, right - left) * 100}%`;
    box.style.height = `${Math.max(0, bottom - top) * 100}%`;
    box.setAttribute("aria-hidden", "true");  // the text beside says the same in words
    return box;
  }

  // One photo: its card in the results, its upright upload and its faces.
  class PhotoCard {
    constructor(file) {
      this.file = file;
      this.upload = null;
      this.img = el("img", {alt: `${file.name} (waiting)`});
      this.frame = el("div", {class: "frame"});
      this.body = el("div", {class: "body"});
      this.node = el("li", {class: "photo"},
        el("figure", {}, this.frame,
          el("figcaption", {}, el("span", {class: "name"}, file.name), this.body)));
      this.setState("waiting");
      this.body.append(el("p", {class: "message info"}, "Waiting for the photos before it…"));
    }

    setState(state) {
      this.node.dataset.state = state;
      this.node.setAttribute("aria-busy", state === "working" || state === "waiting");
    }

    async run() {
      this.setState("working");
      this.body.replaceChildren(el("div", {class: "working"},
        el("progress", {"aria-label": `Looking for faces in ${this.file.name}`}),
        el("span", {}, "Looking for faces…")));
      try {
        if (!this.upload) this.upload = await this.prepare();
        this.show(await this.send());
      } catch (err) {
        this.fail(err instanceof PageError ? err : new PageError("error", String(err)));
      }
    }

    async prepare() {
      const file = this.file;
      if (file.type && !file.type.startsWith("image/")) {
        throw new PageError("not-image", `${file.name} is a ${file.type} file.`);
      }
      let bitmap;
      try {
        bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});
      } catch (e) {
        throw new PageError("not-image", `The browser could not read ${file.name} as an image.`);
      }
      const scale = Math.min(1, config.max_side / Math.max(bitmap.width, bitmap.height));
      const width = Math.max(1, Math.round(bitmap.width * scale));
      const height = Math.max(1, Math.round(bitmap.height * scale));
      const canvas = el("canvas", {width, height});
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff";  // transparent PNG pixels become white, not JPEG's black
      ctx.fillRect(0, 0, width, height);
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(bitmap, 0, 0, width, height);
      const original = [bitmap.width, bitmap.height];
      bitmap.close();
      const blob = await new Promise((resolve) =>
        canvas.toBlob(resolve, "image/jpeg", config.jpeg_quality));
      if (!blob) throw new PageError("not-image", `${file.name} could not be re-encoded.`);
      this.img.src = URL.createObjectURL(blob);
      this.img.alt = file.name;
      this.frame.replaceChildren(this.img);
      this.node.dataset.width = width;
      this.node.dataset.height = height;
      if (blob.size > config.max_request_bytes) {
        throw new PageError("too-large", `${(blob.size / 1048576).toFixed(1)} MiB after ` +
          `scaling to ${width}×${height}; the limit is ` +
          `${(config.max_request_bytes / 1048576).toFixed(1)} MiB.`);
      }
      return {blob, width, height, original};
    }

    send() {
      return postImage("api/predict", this.upload.blob);
    }

    show(faces) {
      const {width, height} = this.upload;
      this.frame.replaceChildren(this.img);
      faces.forEach((face, i) => {
        this.frame.append(faceBox(face, width, height, boxLabel(face), faceDescription(face, i)));
      });
      const count = faces.length;
      this.img.alt = count
        ? `${this.file.name}, ${count} face${count > 1 ? "s" : ""} marked: ` +
          faces.map(faceDescription).join("; ")
        : `${this.file.name}, no face found`;
      this.node.dataset.faces = count;
      this.body.replaceChildren(count
        ? el("ul", {class: "faces"}, ...faces.map((f, i) => el("li", {}, faceDescription(f, i))))
        : el("p", {class: "message info no-face"}, "No face found in this photo."));
      this.setState("done");
    }

    fail(err) {
      const message = el("p", {class: "message error", role: "alert"},
        HEADLINES[err.kind] || HEADLINES.error,
        err.message ? el("span", {class: "detail"}, err.message) : null);
      message.dataset.kind = err.kind;
      this.body.replaceChildren(message);
      if (RETRYABLE.has(err.kind)) {
        const retry = el("button", {type: "button", class: "retry"}, "Try again");
        retry.addEventListener("click", () => enqueue([this]));
        this.body.append(retry);
      }
      if (!this.upload) this.img.alt = `${this.file.name} (not shown)`;
      this.setState("error");
    }
  }

  const queue = [];
  let running = false;
  const status = () => document.getElementById("status");

  function enqueue(cards) {
    for (const card of cards) {
      card.setState("waiting");
      queue.push(card);
    }
    pump();
  }

  async function pump() {
    if (running) return;
    running = true;
    try {
      await ready;
      while (queue.length) {
        status().textContent = `Working: ${queue.length} photo${queue.length > 1 ? "s" : ""} ` +
          "left…";
        await queue.shift().run();
      }
      status().textContent = "Done.";
    } finally {
      running = false;
    }
  }

  function addFiles(files) {
    const cards = Array.from(files, (file) => new PhotoCard(file));
    // The newest photos on top, each batch in the order it was chosen.
    const batch = document.createDocumentFragment();
    for (const card of cards) batch.append(card.node);
    document.getElementById("results").prepend(batch);
    enqueue(cards);
  }

  // The camera mode: one per page. State in #live's data-state (off, starting, on, error)
  // and the count of answered frames in its data-frames.
  const CAMERA_ERRORS = {
    NotAllowedError: "The camera was refused. Allow this page to use the camera in the " +
      "browser's site settings, then try again.",
    SecurityError: "The browser does not allow a camera on this page (it needs https or " +
      "localhost).",
    NotFoundError: "No camera was found. Connect one and try again.",
    OverconstrainedError: "No camera was found that can send video.",
    NotReadableError: "The camera could not be started: is another program using it?",
  };

  function liveLabel(face) {
    const id = face.track == null ? "new" : String(face.track);
    return [id, boxLabel(face)].join(" · ");
  }

  function liveDescription(face) {
    const who = face.track == null ? "A new face" : `Person ${face.track}`;
    const gender = genderText(face, true);
    return `${who}: age ${ageText(face)}${gender ? `, ${gender}` : ""}` +
      ` (${face.frames} frame${face.frames === 1 ? "" : "s"})`;
  }

  function randomToken() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  class LiveCamera {
    constructor() {
      this.section = document.getElementById("live");
      this.video = document.getElementById("live-video");
      this.frame = document.getElementById("live-frame");
      this.status = document.getElementById("live-status");
      this.faces = document.getElementById("live-faces");
      this.startButton = document.getElementById("camera-start");
      this.stopButton = document.getElementById("camera-stop");
      this.stream = null;
      this.session = null;
      this.run = 0;  // bumped by each start and stop: an old loop sees it changed and ends
      this.canvas = el("canvas");
    }

    setState(state, message, isError) {
      const said = `${state}|${message}|${isError}`;
      if (said === this.said) return;  // the status line is announced only when it changes
      this.said = said;
      this.section.dataset.state = state;
      this.status.replaceChildren(message && isError
        ? el("span", {class: "message error", role: "alert"}, message) : message || "");
      const on = state === "starting" || state === "on";
      this.startButton.hidden = on;
      this.stopButton.hidden = !on;
      this.frame.hidden = !on;
    }

    async start() {
      const run = ++this.run;
      this.setState("starting", "Starting the camera…");
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        this.setState("error", CAMERA_ERRORS.SecurityError, true);
        return;
      }
      let stream;
      try {
        await ready;
        stream = await navigator.mediaDevices.getUserMedia(
          {video: {width: {ideal: 640}, height: {ideal: 480}}, audio: false});
      } catch (e) {
        if (run !== this.run) return;
        this.setState("error", CAMERA_ERRORS[e && e.name] ||
          `The camera could not be started (${(e && (e.message || e.name)) || e}).`, true);
        return;
      }
      if (run !== this.run) {  // stopped while the browser was asking
        stream.getTracks().forEach((t) => t.stop());
        return;
      }
      this.stream = stream;
      this.session = randomToken();
      this.section.dataset.frames = "0";
      this.video.srcObject = stream;
      try {
        await this.video.play();
      } catch (e) { /* muted video plays; a failure shows as no frames below */ }
      this.setState("on", "Looking for faces…");
      this.loop(run, this.session);
    }

    // Stops the camera; the server forgets this page's tracks once its last frame is answered
    // (a frame answered after the DELETE would start them again). `leaving`: the page is
    // closing and cannot wait (a frame still in flight is then forgotten after the idle time).
    stop(leaving = false) {
      this.run++;
      if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
      this.stream = null;
      this.video.srcObject = null;
      this.frame.querySelectorAll(".face-box").forEach((b) => b.remove());
      this.faces.textContent = "";
      if (this.session) {
        const session = this.session;
        const forget = () => fetch(`api/live?session=${session}`,
                                   {method: "DELETE", keepalive: true}).catch(() => {});
        if (leaving || !this.pending) forget();
        else this.pending.then(forget, forget);
      }
      this.pending = null;
      this.session = null;
      this.setState("off", "Camera stopped.");
    }

    // Frames at most max_frames_per_second, the next one only after the last one's answer.
    async loop(run, session) {
      const period = 1000 / Math.max(0.1, config.live.max_frames_per_second);
      while (run === this.run) {
        const begun = performance.now();
        let wait = period;
        try {
          this.pending = this.send(session);
          const faces = await this.pending;
          if (run !== this.run) return;
          if (faces) this.show(faces);
        } catch (err) {
          if (run !== this.run) return;
          const headline = HEADLINES[err.kind] || HEADLINES.error;
          this.setState("on", `${headline} ${err.message || ""} Retrying…`, true);
          wait = 2000;  // a server in trouble is asked less often
        }
        await sleep(Math.max(0, wait - (performance.now() - begun)));
      }
    }

    async send(session) {
      const video = this.video;
      if (!video.videoWidth || video.readyState < 2) return null;  // no frame yet
      const scale = Math.min(1, config.live.max_side / Math.max(video.videoWidth,
                                                                 video.videoHeight));
      const width = Math.max(1, Math.round(video.videoWidth * scale));
      const height = Math.max(1, Math.round(video.videoHeight * scale));
      this.canvas.width = width;
      this.canvas.height = height;
      this.canvas.getContext("2d").drawImage(video, 0, 0, width, height);
      const blob = await new Promise((resolve) =>
        this.canvas.toBlob(resolve, "image/jpeg", config.jpeg_quality));
      if (!blob) throw new PageError("error", "The camera frame could not be encoded.");
      const faces = await postImage(`api/live?session=${session}`, blob);
      this.size = [width, height];
      return faces;
    }

    show(faces) {
      const [width, height] = this.size;
      this.frame.querySelectorAll(".face-box").forEach((b) => b.remove());
      for (const face of faces) {
        const box = faceBox(face, width, height, liveLabel(face), liveDescription(face));
        box.dataset.track = face.track == null ? "" : String(face.track);
        this.frame.append(box);
      }
      this.faces.textContent = faces.length
        ? faces.map(liveDescription).join("; ") : "No face in view.";
      this.section.dataset.frames = String(Number(this.section.dataset.frames) + 1);
      this.setState("on", "Camera on.");
    }
  }

  function init() {
    const input = document.getElementById("photos");
    input.addEventListener("change", () => {
      if (input.files.length) addFiles(input.files);
      input.value = "";  // choosing the same photo again is a new upload
    });
    const zone = document.getElementById("dropzone");
    zone.addEventListener("dragover", (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragging");
      if (e.dataTransfer && e.dataTransfer.files.length) addFiles(e.dataTransfer.files);
    });
    // A photo dropped beside the box must not replace the page with the photo.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
    const camera = new LiveCamera();
    camera.startButton.addEventListener("click", () => camera.start());
    camera.stopButton.addEventListener("click", () => camera.stop());
    // A page closed with its camera on lets the server forget its tracks at once.
    window.addEventListener("pagehide", () => { if (camera.session) camera.stop(true); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
