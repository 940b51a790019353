"""Local, API-compatible stand-ins for Langfuse, Cleanlab TLM and OpenAI.

They exist so that the real ``langfuse``, ``cleanlab-tlm`` and ``openai`` clients can be driven
over real HTTP on 127.0.0.1, offline: in the tests, the benchmarks and the demo. Scores from the
TLM sandbox are SYNTHETIC (a deterministic hash of the prompt and response), not a trust model.
"""
