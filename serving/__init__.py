"""Serving: a local server speaking TF Serving's REST and gRPC APIs, clients, TF Serving configs."""
