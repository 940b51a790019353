"""The stages of a window evaluation: fetch, pair, score, upload, report.

Pure logic lives in plain functions (tested without Prefect); each stage module also exposes the
Prefect task that the flow calls once per chunk.
"""
