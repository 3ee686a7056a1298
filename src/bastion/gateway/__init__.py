"""The gateway: a chain of small layers behind thin front ends (own HTTP server, ASGI)."""
