"""The REST API: FastAPI app factory, schemas, problem+json errors and thin routes."""
