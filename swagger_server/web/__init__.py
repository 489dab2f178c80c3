"""HTTP plumbing: ASGI middleware, CORS, parameter parsing, the served spec, JSON."""
