"""Talking to the meter: typed models, the HTTP transport, pinned TLS and the client."""
