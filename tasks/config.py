"""Configuration: service credentials from the environment, run tuning with sane bounds.

Credentials use the SDKs' own variable names. Anything missing or invalid is refused before any
network call, with a message that names the variable to set.
"""

from __future__ import annotations

from logging import Logger, LoggerAdapter
from typing import Annotated, Literal, get_args

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.errors import ConfigError

RunLogger = Logger | LoggerAdapter[Logger]  # what Prefect's get_run_logger() returns
QualityPreset = Literal["best", "high", "medium", "low", "base"]
EXPLAINING_PRESETS = ("best", "high", "medium")


class LangfuseSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    public_key: str = Field(validation_alias="LANGFUSE_PUBLIC_KEY", min_length=1)
    secret_key: SecretStr = Field(validation_alias="LANGFUSE_SECRET_KEY")
    base_url: str = Field(
        default="https://cloud.langfuse.com",
        validation_alias=AliasChoices("LANGFUSE_BASE_URL", "LANGFUSE_HOST"),
    )
    timeout_s: float = Field(default=30.0, gt=0, validation_alias="LANGFUSE_TIMEOUT")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("secret_key")
    @classmethod
    def _secret(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value():
            raise ValueError("must not be empty")
        return v


class TLMSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    api_key: SecretStr = Field(validation_alias="CLEANLAB_TLM_API_KEY")
    # read by cleanlab_tlm itself when it is first imported; kept here to report and validate it
    base_url: str = Field(
        default="https://api.cleanlab.ai/api", validation_alias="CLEANLAB_API_BASE_URL"
    )

    @field_validator("api_key")
    @classmethod
    def _secret(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value():
            raise ValueError("must not be empty")
        return v


class Tuning(BaseSettings):
    """Knobs with defaults for production; tests shrink the delays. Env prefix TRUST_EVAL_."""

    model_config = SettingsConfigDict(env_prefix="TRUST_EVAL_", extra="ignore")

    page_size: Annotated[int, Field(ge=1, le=1000)] = 1000  # traces per chunk (one page)
    retries: Annotated[int, Field(ge=0, le=20)] = 5  # Langfuse calls: attempts after the first
    retry_base_delay_s: Annotated[float, Field(ge=0)] = 1.0  # exponential backoff base
    retry_max_delay_s: Annotated[float, Field(ge=0)] = 60.0  # cap, Retry-After included
    tlm_timeout_s: Annotated[float, Field(gt=0)] = 120.0  # per TLM item
    # after a TLM 429 without Retry-After (the client would retry at once), the run's TLM calls
    # pause at least this long (doubling while the 429s go on, jittered)
    tlm_rate_limit_wait_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # a Prefect global concurrency limit with slot decay that every Langfuse request of every
    # run takes a slot from: one request budget shared by all workers (make prefect creates it)
    langfuse_rate_limit: str | None = None
    # the same for POST ingestion (score-create events), which Langfuse counts in a bucket of
    # its own, far larger than the general API's; unset: ingestion requests take no slot
    langfuse_ingestion_rate_limit: str | None = None
    # a Prefect global concurrency limit (no decay) whose slots every TLM call in flight takes:
    # one ceiling for the runs of every worker; slots are taken in leased blocks of this size
    tlm_concurrency_limit: str | None = None
    tlm_slot_block: Annotated[int, Field(ge=1, le=512)] = 16
    # a run killed while holding slots loses them after this long (Prefect's minimum is 60 s)
    tlm_slot_lease_s: Annotated[float, Field(ge=60, le=86_400)] = 120.0
    # dry runs: TLM's price per 1000 tokens of prompt and response, for a cost estimate
    price_per_1k_tokens: Annotated[float, Field(ge=0)] | None = None
    # the first Langfuse request (its version) gives up after this long on an unreachable host
    connect_budget_s: Annotated[float, Field(gt=0)] = 10.0
    # chunks at TLM at once: later chunks' items run while earlier ones wait on their slowest
    # items (TLM's long tail); a crash loses at most this many chunks of paid work
    chunks_in_flight: Annotated[int, Field(ge=1, le=32)] = 8
    max_prompt_chars: Annotated[int, Field(ge=100)] = 250_000  # ~70k tokens: skip too_large
    upload_batch_bytes: Annotated[int, Field(ge=10_000, le=1_000_000)] = 900_000
    # a batch of score-create events on the ingestion route (Langfuse takes up to 4.5 MB)
    ingestion_batch_bytes: Annotated[int, Field(ge=10_000, le=4_000_000)] = 3_500_000
    settle_lag_s: Annotated[float, Field(ge=0, le=86_400)] = 600.0  # traces younger may run on
    # a trace's GENERATIONs start within this long after its root (looked up per page)
    trace_max_duration_s: Annotated[float, Field(ge=0)] = 3600.0
    system_prompt_keys: tuple[str, ...] = ("system_prompt", "system")
    context_keys: tuple[str, ...] = ("context", "retrieved_context")  # RAG context in metadata
    lowest_n: Annotated[int, Field(ge=1, le=1000)] = 20  # rows in the lowest-trust table
    langfuse_ui_url: str | None = None  # base for trace links; default the API base URL
    # how scores are written: "auto" asks the server's version (GET health); "batch" is the
    # list POST (Cloud, self-hosted v4.59+), "ingestion" score-create events in batches on
    # POST ingestion (older self-hosted servers: v4.16), "single" one score per POST (v4.16;
    # stamped on arrival, so looked up by id)
    score_write: Literal["auto", "batch", "ingestion", "single"] = "auto"
    single_post_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # Langfuse shows a written score to readers only after a while (worker + ClickHouse)
    score_read_lag_s: Annotated[float, Field(ge=0)] = 900.0
    # after the uploads, read the scores back for up to this long ("confirmed"); 0 = off
    verify_wait_s: Annotated[float, Field(ge=0)] = 0.0
    # where runs record the scores they wrote (any fsspec URL); default under PREFECT_HOME
    ledger_url: str | None = None
    ledger_retention_s: Annotated[float, Field(ge=0)] = 7 * 86400.0
    # TLM counts as down after this many chunks in a row in which it scored nothing
    tlm_down_after_chunks: Annotated[int, Field(ge=1)] = 3
    comment_max_chars: Annotated[int, Field(ge=100, le=100_000)] = 20_000
    # the window lock: a holder silent this long is dead (it beats 4 times a lease); a run
    # waits at most lock_timeout_s for a live holder
    lock_lease_s: Annotated[float, Field(ge=1, le=3600)] = 120.0
    lock_timeout_s: Annotated[float, Field(ge=0, le=7 * 86_400)] = 3600.0
    # a stopped run (Ctrl-C, SIGTERM, a cancel, a lost lock) sends nothing more and gives the
    # items at TLM this long to come back (they land), then gives them up
    stop_grace_s: Annotated[float, Field(ge=0, le=60)] = 3.0


def _explain(err: ValidationError, names: dict[str, str]) -> str:
    parts = []
    for e in err.errors():
        loc = str(e["loc"][0]) if e["loc"] else ""
        var = names.get(loc, loc)
        if e["type"] == "missing":
            parts.append(f"{var} is not set")
        else:
            parts.append(f"{var}: {e['msg']}")
    return "; ".join(parts)


def load_langfuse() -> LangfuseSettings:
    try:
        return LangfuseSettings()  # type: ignore[call-arg]
    except ValidationError as err:
        raise ConfigError(
            "Langfuse configuration: "
            + _explain(err, {})
            + ". Set LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL "
            "(project settings -> API keys in Langfuse)."
        ) from None


def load_tlm() -> TLMSettings:
    try:
        return TLMSettings()  # type: ignore[call-arg]
    except ValidationError as err:
        raise ConfigError(
            "Cleanlab TLM configuration: "
            + _explain(err, {})
            + ". Set CLEANLAB_TLM_API_KEY (https://tlm.cleanlab.ai)."
        ) from None


def load_tuning() -> Tuning:
    try:
        return Tuning()
    except ValidationError as err:
        names = {f: f"TRUST_EVAL_{f.upper()}" for f in Tuning.model_fields}
        raise ConfigError("Tuning: " + _explain(err, names) + ".") from None


def check_preset(preset: str) -> None:
    if preset not in EXPLAINING_PRESETS:
        known = preset in get_args(QualityPreset)
        what = "cannot explain its scores" if known else "is not a TLM quality preset"
        raise ConfigError(
            f"quality_preset={preset!r} {what}; use one of {', '.join(EXPLAINING_PRESETS)}."
        )
