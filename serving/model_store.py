"""Model versions under a base path: discovery, loading, warmup, hot swap, status.

Owns what TF Serving's file-system source + "latest" version policy do: the numeric
sub-directories of `--model_base_path` holding a `saved_model.pb` are versions; the newest
is loaded, warmed up (replaying `assets.extra/tf_serving_warmup_requests`) and only then
swapped in, so requests never see a half-loaded model; the previous version is unloaded.
A poll thread (`--file_system_poll_wait_seconds`) picks up new versions without a restart.
A version that fails to load is reported (GetModelStatus: END with the error) and the old
one keeps serving; it is retried with a back-off (1 s doubling to 60 s), and at once when
its files have changed and then stayed the same for one poll, because the usual cause is a
version still being copied (`cp -r` writes saved_model.pb before variables/). TF Serving
gives up after --max_num_load_retries (5, a minute apart); here a version is retried until
it loads or is removed.
"""
import logging
import os
import threading
import time

import tensorflow as tf

from agegender import model_layout
from agegender import serving_contract as contract
from serving.errors import ServingError, client_message, invalid, not_found

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = contract.SERVING_DEFAULT

# ModelVersionStatus.State names (tensorflow_serving/apis/get_model_status.proto).
LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"

RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0  # TF Serving's --load_retry_interval_micros default


class LoadedModel:
    """One loaded SavedModel version: its SignatureDefs and callable signatures."""

    def __init__(self, name, version, path):
        self.name = name
        self.version = version
        self.path = path
        meta_graph = model_layout.serving_meta_graph(path)
        self.signature_defs = {k: v for k, v in meta_graph.signature_def.items()
                               if not k.startswith("__")}
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self._functions = dict(self._loaded.signatures)
        self._defaults = {
            sig: {n: tf.make_ndarray(p) for n, p in sd.defaults.items()}
            for sig, sd in self.signature_defs.items()}

    def signature_def(self, signature_name):
        signature_name = signature_name or DEFAULT_SIGNATURE
        sd = self.signature_defs.get(signature_name)
        if sd is None:
            raise not_found(f"Serving signature name: \"{signature_name}\" not found in signature "
                            f"def; the model has {sorted(self.signature_defs)}")
        return sd

    def run(self, signature_name, inputs):
        """Runs a signature on {name: ndarray}; fills inputs missing from the request from the
        SignatureDef `defaults` (as TF Serving does). Returns {output name: ndarray}."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        sd = self.signature_def(signature_name)
        feed = dict(self._defaults[signature_name])
        feed.update(inputs)
        missing = [n for n in sd.inputs if n not in feed]
        if missing:
            raise invalid(f"missing input(s) {missing} and no default value")
        kwargs = {n: tf.constant(v, dtype=tf.as_dtype(sd.inputs[n].dtype)) for n, v in feed.items()}
        try:
            outputs = self._functions[signature_name](**kwargs)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as e:
            raise invalid(client_message(e.message)) from None
        except tf.errors.OpError as e:
            raise ServingError("INTERNAL", client_message(e.message)) from None
        return {k: v.numpy() for k, v in outputs.items()}

    def warmup(self):
        """Replays the warmup PredictionLog records (predict requests); returns their count."""
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.path, model_layout.WARMUP_PATH)
        if not os.path.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).take(1000):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                continue  # classify/regress/multi-inference are not served here
            request = entry.predict_log.request
            inputs = {n: tf.make_ndarray(p) for n, p in request.inputs.items()}
            self.run(request.model_spec.signature_name, inputs)
            count += 1
        return count


class _Failure:
    """A version that failed to load: when to try again."""

    def __init__(self, fingerprint):
        self.attempts = 0
        self.fingerprint = fingerprint  # of the files the failed attempt saw
        self.last_seen = fingerprint
        self.next_try = 0.0

    def failed(self, fingerprint, now):
        self.attempts += 1
        self.fingerprint = self.last_seen = fingerprint
        delay = min(RETRY_FIRST_SECONDS * 2 ** (self.attempts - 1), RETRY_MAX_SECONDS)
        self.next_try = now + delay
        return delay

    def due(self, fingerprint, now):
        """Back-off over, or files changed since the failure and unchanged since last poll."""
        settled = fingerprint != self.fingerprint and fingerprint == self.last_seen
        self.last_seen = fingerprint
        return now >= self.next_try or settled


def _fingerprint(path):
    """(relative path, size, mtime) of every file under a version directory."""
    files = []
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:  # removed while we look: the next poll sees the new state
                continue
            files.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(files))


class ModelStore:
    """Serves the newest version of one model and reloads when a newer one appears."""

    def __init__(self, name, base_path, poll_seconds=1.0, warmup=True):
        self.name = name
        self.base_path = os.path.abspath(base_path)
        self.poll_seconds = poll_seconds
        self.warmup = warmup
        self._lock = threading.Lock()
        self._current = None
        self._status = {}  # version -> (state, error_code, error_message)
        self._failures = {}  # version -> _Failure, until it loads or disappears
        self._stop = threading.Event()
        self._thread = None
        self.loads = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self):
        """Loads the newest version now (blocking), then polls in the background."""
        if not os.path.isdir(self.base_path):
            log.warning("model base path %s does not exist (yet); polling it", self.base_path)
        self.poll_once()
        if self.poll_seconds and self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="model-store-poll",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _poll_loop(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # never let the poller die
                log.exception("polling %s failed", self.base_path)

    def poll_once(self):
        """One scan: serves the newest version that loads. Returns the served model."""
        versions = model_layout.versions(self.base_path)
        for gone in set(self._failures) - set(versions):
            del self._failures[gone]
        current = self._current
        now = time.monotonic()
        for version in reversed(versions):
            if current is not None and version == current.version:
                return current
            path = os.path.join(self.base_path, str(version))
            failure = self._failures.get(version)
            if failure is not None and not failure.due(_fingerprint(path), now):
                continue  # still backing off: an older version may serve meanwhile
            model = self._load(version, path)
            if model is not None:
                return model
        return self._current

    def _load(self, version, path):
        fingerprint = _fingerprint(path)
        self._set_status(version, LOADING)
        try:
            started = time.monotonic()
            model = LoadedModel(self.name, version, path)
            warmed = model.warmup() if self.warmup else 0
            log.info("loaded %s version %d from %s in %.1fs (%d warmup requests)", self.name,
                     version, path, time.monotonic() - started, warmed)
        except Exception as e:
            failure = self._failures.setdefault(version, _Failure(fingerprint))
            delay = failure.failed(fingerprint, time.monotonic())
            message = (f"failed to load (attempt {failure.attempts}): {e}; retrying in "
                       f"{delay:g} s, or sooner when its files change")
            log.error("%s version %d %s", self.name, version, message)
            self._set_status(version, END, "UNKNOWN", message)
            return None
        self._failures.pop(version, None)
        with self._lock:
            old, self._current = self._current, model
            self.loads += 1
        self._set_status(version, AVAILABLE)
        if old is not None:
            self._set_status(old.version, END)
        return model

    def _set_status(self, version, state, code="OK", message=""):
        with self._lock:
            self._status[version] = (state, code, message)

    # -- queries ---------------------------------------------------------------------------
    def check_name(self, name):
        if name != self.name:
            raise not_found(f"Servable not found for request: Latest({name})")

    def get(self, name, version=None):
        """The served model for a request (NOT_FOUND for another name or version)."""
        self.check_name(name)
        current = self._current
        if version is None:
            if current is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            return current
        if current is None or current.version != int(version):
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return current

    def statuses(self, name, version=None):
        """[(version, state, error_code, error_message)] like GetModelStatus."""
        self.check_name(name)
        with self._lock:
            items = sorted(self._status.items(), reverse=True)
        if version is not None:
            items = [(v, s) for v, s in items if v == int(version)]
            if not items:
                raise not_found(f"Could not find version {version} of model {name}")
        if not items:
            raise not_found(f"Could not find any versions of model {name}")
        return [(v,) + s for v, s in items]

