// The page: photos in, one box and label per face out. Plain JavaScript, no dependencies.
//
// Each photo is drawn onto a canvas upright (createImageBitmap applies the EXIF orientation,
// which the model's decoder does not), scaled down to the server's max_side, and sent as
// that JPEG; the page shows the very JPEG it sent, so the model's boxes (pixels of the sent
// photo) land on the faces shown. Photos are sent one at a time, so a drop of fifty photos
// never floods the model server.
"use strict";

(() => {
  const config = {max_request_bytes: 16 << 20, max_side: 1600, jpeg_quality: 0.9,
                  timeout_seconds: 10};
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

    async send() {
      let response;
      try {
        response = await fetch("api/predict", {
          method: "POST",
          headers: {"Content-Type": "image/jpeg"},
          body: this.upload.blob,
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

    show(faces) {
      const {width, height} = this.upload;
      this.frame.replaceChildren(this.img);
      faces.forEach((face, i) => {
        const [x1, y1, x2, y2] = face.box.map((v) => v ?? 0);
        const left = Math.max(0, x1) / width, top = Math.max(0, y1) / height;
        const right = Math.min(width, x2) / width, bottom = Math.min(height, y2) / height;
        const box = el("div", {class: "face-box", title: faceDescription(face, i)},
          el("span", {class: "label"}, boxLabel(face)));
        if (top < 0.08) box.classList.add("near-top");
        box.style.left = `${left * 100}%`;
        box.style.top = `${top * 100}%`;
        box.style.width = `${Math.max(0, right - left) * 100}%`;
        box.style.height = `${Math.max(0, bottom - top) * 100}%`;
        box.setAttribute("aria-hidden", "true");  // the list below says the same in words
        this.frame.append(box);
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
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
