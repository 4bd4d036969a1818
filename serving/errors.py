"""The one error type of the serving stack, carrying a gRPC status code name.

Owns the mapping from a canonical status code (what TF Serving uses internally) to the
HTTP status of the REST API and to `grpc.StatusCode` of the gRPC API, so both front ends
report the same failure the same way.
"""

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,  # only used for oversized requests here
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
}


class ServingError(Exception):
    """A failed request: `code` is a gRPC status code name, `message` goes to the client."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        return HTTP_STATUS.get(self.code, 500)

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
