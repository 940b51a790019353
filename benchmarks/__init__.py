"""Benchmarks: Langfuse requests, time and memory of the window flow against the seed's
approach and a no-orchestration floor. Run with ``uv run python -m benchmarks.run``."""
