"""Thin FastAPI routes over the orchestrator's clients (deps.AppState)."""
