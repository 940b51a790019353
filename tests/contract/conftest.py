"""Contract layer: the sandboxes over real HTTP, driven by the real SDKs and tasks; no flow runs.

cleanlab_tlm reads CLEANLAB_API_BASE_URL once, when first imported: the process-wide TLM sandbox
starts here, before any test module of this folder (or the code it tests) imports it.
"""

from sandbox.tlm_app import session_tlm_sandbox

session_tlm_sandbox()
