"""Prefect flows: the window flow, the backfill flow and the offline demo."""
