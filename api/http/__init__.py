"""The HTTP API: a FastAPI app factory, its routes, dependencies, schemas, errors and middleware."""
