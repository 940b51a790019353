"""Flow layer: flows run on the Prefect test server against the sandboxes over HTTP.

cleanlab_tlm reads CLEANLAB_API_BASE_URL once, when first imported: the process-wide TLM sandbox
starts here, before any test module of this folder (or the code it tests) imports it.
"""

from sandbox.tlm_app import session_tlm_sandbox

session_tlm_sandbox()
