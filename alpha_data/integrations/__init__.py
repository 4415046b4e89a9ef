"""Integrations with frameworks (FastAPI) and telemetry."""
