"""The orchestrator: CoWest collaboration behind /v1/collaborate and an OpenAI-compatible API.

- app.py          wiring: settings, clients, routes, middleware, lifespan
- config.py       OrchestratorSettings (COWEST_ORCH_*)
- protocol.py     request/response models (OpenAI-compatible and CoWest-native)
- errors.py       OpenAI error objects and exception handlers
- upstream.py     one pooled OpenAI-compatible client per model server, retries, timeouts
- pipeline.py     weak draft -> strong refinement, degraded modes
- adapters.py     the domain -> active adapter alias cache (Redis + pub/sub)
- tracelog.py     trace/feedback log to Redis streams with a crash-safe local spool
- metrics.py      Prometheus metrics
- routes/         thin FastAPI routes
"""
