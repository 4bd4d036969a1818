"""The one error type of the serving stack, carrying a gRPC status code name, and what a
client may read of an error.

Owns the mapping from a canonical status code (what TF Serving uses internally) to the
HTTP status of the REST API and to `grpc.StatusCode` of the gRPC API, so both front ends
report the same failure the same way; and `client_message`, the one sanitiser every message
goes through before it leaves the server: TensorFlow's op errors carry graph internals
(`{{function_node __inference_...}}`, `[[{{node ...}}]]`, `[Op:...]`, "Detected at node"
stacks, device names) that say nothing to a client and describe the server's graph to anyone
probing it.
"""
import re

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,  # a request too large; a busy server says 429 (`busy`)
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
}

MAX_MESSAGE_CHARS = 2000  # a client message is a sentence, never a dump


class ServingError(Exception):
    """A failed request: `code` is a gRPC status code name, `message` goes to the client;
    `http_status` overrides the code's usual HTTP status (429 for a busy server)."""

    def __init__(self, code, message, http_status=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self):
        return self._http_status or HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_code(self):
        import grpc

        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.INTERNAL)

    def __str__(self):
        return f"{self.code}: {self.message}"


def invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message):
    return ServingError("NOT_FOUND", message)


def busy(message):
    """The server has no room for the request now: 429 / RESOURCE_EXHAUSTED, at once."""
    return ServingError("RESOURCE_EXHAUSTED", message, http_status=429)


# Inline pieces of TensorFlow's error text that name graph internals.
_INTERNALS = re.compile(
    r"\[\[(?:\{\{[^}]*\}\})+\]\]"  # [[{{function_node f}}{{node decode/DecodeImage}}]]
    r"|\{\{function_node [^}]*\}\}"  # {{function_node __inference_signature_wrapper_123}}
    r"|\{\{node [^}]*\}\}"
    r"|\[Op:[^\]]*\](?: name: ?\S*)?"  # [Op:DecodeImage] name: foo
    r"|\b__\w+"  # __inference_..., __wrapped__...
    r"|/job:\w+/replica:\d+/task:\d+/device:\w+:\d+")


def client_message(message):
    """What a client may read of an error: TensorFlow's op messages without graph
    internals, stacks or device names; other text unchanged (bounded in length)."""
    useful, in_stack = [], False
    for line in str(message or "").strip().splitlines():
        # A function call's error reads "Graph execution error:", "Detected at node X
        # defined at (most recent call last):", an indented stack (or "<stack traces
        # unavailable>"), then the op's message, then "[[{{node X}}]]".
        if line.startswith("Detected at node"):
            in_stack = True
            continue
        if in_stack and (line[:1].isspace() or line.startswith("<stack traces")):
            continue
        in_stack = False
        line = re.sub(r"\s+", " ", _INTERNALS.sub("", line)).strip(" ;:")
        if line and line not in ("Graph execution error", "name") and not line.startswith(
                ("Node: ", "Node:")):
            useful.append(line)
    text = "; ".join(useful) or "the model could not run the request"
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS - 3] + "..."
    return text
