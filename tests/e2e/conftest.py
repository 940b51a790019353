"""End-to-end layer: real ``prefect server`` processes and workers, child processes killed with
SIGKILL, the CLI as a subprocess, the benchmark smoke run.

cleanlab_tlm reads CLEANLAB_API_BASE_URL once, when first imported: the process-wide TLM sandbox
starts here, before any test module of this folder (or the code it tests) imports it.
"""

from sandbox.tlm import session_tlm_sandbox

session_tlm_sandbox()
