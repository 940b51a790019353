"""The environment the tests run the product code in."""

from __future__ import annotations

# Production defaults wait seconds to minutes; the tests run the same code with short delays.
FAST_TUNING = {
    "TRUST_EVAL_RETRIES": "3",
    "TRUST_EVAL_RETRY_BASE_DELAY_S": "0.01",
    "TRUST_EVAL_RETRY_MAX_DELAY_S": "2",
    "TRUST_EVAL_TLM_TIMEOUT_S": "20",
    "TRUST_EVAL_SETTLE_LAG_S": "0",
}
