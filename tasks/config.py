"""Configuration: service credentials from the environment (or Prefect Secret blocks it names),
run tuning with sane bounds.

Credentials use the SDKs' own variable names. Anything missing or invalid is refused before any
network call, with a message that names the variable to set.
"""

from __future__ import annotations

import json
import os
import re
from logging import Logger, LoggerAdapter
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from tasks.errors import ConfigError

# the API URL of the CLI's own embedded Prefect server (flows/prefect_server.py), when it runs one
EMBEDDED_PREFECT_API_VAR = "TRUST_EVAL_EMBEDDED_PREFECT_API"
RunLogger = Logger | LoggerAdapter[Logger]


def no_ceiling_here(limit: str) -> str:
    """Why a TLM ceiling is refused on an embedded or ephemeral Prefect server."""
    return (
        f"TRUST_EVAL_TLM_CONCURRENCY_LIMIT={limit} needs a persistent Prefect server: set "
        "PREFECT_API_URL (e.g. `make prefect`, then export PREFECT_API_URL="
        "http://127.0.0.1:4200/api), or unset it for a run of its own (an embedded server "
        "never takes back the slots of a killed run)"
    )  # what Prefect's get_run_logger() returns


QualityPreset = Literal["best", "high", "medium", "low", "base"]
EXPLAINING_PRESETS = ("best", "high", "medium")
# TLM tokens per token of prompt and response, by preset (a dry run's cost estimate): the
# presets' relative cost, as the TLM sandbox models it (sandbox/tlm/presets.py)
PRESET_COST: dict[str, float] = {"base": 1.0, "low": 2.0, "medium": 4.0, "high": 8.0, "best": 12.0}


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

    @property
    def shown_url(self) -> str:
        """The base URL as messages, logs and links show it: without a user or password."""
        return without_credentials(self.base_url)


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` taken out (masked as ``***@``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


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
    # TLM's price per 1000 tokens of prompt and response: a dry run's cost estimate, the cost
    # per stage in the report, and what prices a run's max_cost
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
    # a backfill's running day with no heartbeat this long is lost (its worker died) and runs
    # again; unset: three of Prefect's heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY)
    day_silence_s: Annotated[float, Field(ge=30, le=86_400)] | None = None
    # a dry run's cost: TLM tokens per token of prompt and response, by preset; a JSON object,
    # e.g. {"medium": 5}: the presets it leaves out keep their default
    preset_cost_multipliers: dict[str, float] = Field(default_factory=lambda: dict(PRESET_COST))
    # TLM tokens per token of prompt and response of one get_explanation call (it carries no
    # preset: the sandbox serves it like one medium call)
    explanation_cost_multiplier: Annotated[float, Field(gt=0)] = 4.0
    # the CLI asks before a window or backfill that may send more TLM items than this
    confirm_items: Annotated[int, Field(ge=0)] = 10_000
    # the Prefect server of `make prefect`: the CLI runs on it when PREFECT_API_URL is unset
    # and it answers (empty: never look)
    local_prefect_api: str = "http://127.0.0.1:4200/api"

    @field_validator("preset_cost_multipliers")
    @classmethod
    def _multipliers(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(PRESET_COST))
        if unknown:
            raise ValueError(f"unknown preset(s) {unknown}: use {', '.join(PRESET_COST)}")
        if any(x <= 0 for x in v.values()):
            raise ValueError("multipliers must be greater than 0")
        return PRESET_COST | v

    def preset_cost(self, preset: str) -> float:
        return self.preset_cost_multipliers.get(preset, PRESET_COST["medium"])


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


BLOCK_SUFFIX = "_BLOCK"


def from_secret_blocks(*names: str) -> dict[str, str]:
    """Credentials from Prefect Secret blocks: for each variable NAME whose ``NAME_BLOCK`` is set
    (a deployment's ``job_variables`` env, so one worker serves several projects), the value of
    the Secret block it names. Variables without one come from the environment. Only the
    block's name is in the deployment: its value is read here, at run time."""
    out = {}
    for name in names:
        block = os.environ.get(name + BLOCK_SUFFIX, "").strip()
        if block:
            out[name] = secret_block_value(name + BLOCK_SUFFIX, block)
    return out


def secret_block_value(variable: str, block: str) -> str:
    from prefect.blocks.system import Secret

    try:
        loaded: Any = Secret.load(block, _sync=True)  # type: ignore[call-arg]
        value: object = loaded.get()
    except ValueError:  # Prefect: no block document of that name
        raise ConfigError(
            f"{variable}={block}: the Prefect server has no Secret block {block!r}: create it "
            f"(Secret(value=...).save({block!r}), or the UI's Blocks page) or unset {variable}"
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{variable}={block}: the Secret block {block!r} holds no text")
    return value.strip()


def load_langfuse() -> LangfuseSettings:
    names = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL")
    try:
        return LangfuseSettings(**from_secret_blocks(*names))  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(
            "Langfuse configuration: "
            + _explain(err, {})
            + ". Set LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL "
            "(project settings -> API keys in Langfuse)."
        ) from None


def load_tlm() -> TLMSettings:
    try:
        return TLMSettings(**from_secret_blocks("CLEANLAB_TLM_API_KEY"))  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(
            "Cleanlab TLM configuration: "
            + _explain(err, {})
            + ". Set CLEANLAB_TLM_API_KEY (https://tlm.cleanlab.ai)."
        ) from None


_FIELD_IN = re.compile(r'field "(\w+)"')


def load_tuning() -> Tuning:
    names = {f: f"TRUST_EVAL_{f.upper()}" for f in Tuning.model_fields}
    try:
        return Tuning()
    except ValidationError as err:
        raise ConfigError("Tuning: " + _explain(err, names) + ".") from None
    except SettingsError as err:  # a list or mapping setting that is not JSON
        found = _FIELD_IN.search(str(err))
        field = found.group(1) if found else ""
        info = Tuning.model_fields.get(field)
        default = info.get_default(call_default_factory=True) if info else None
        what = "a JSON object" if isinstance(default, dict) else "a JSON list"
        example = f", e.g. {json.dumps(default)}" if isinstance(default, dict | tuple) else ""
        raise ConfigError(
            f"Tuning: {names.get(field, 'a TRUST_EVAL_ variable')} must be {what}{example}."
        ) from None


def check_preset(preset: str, logged: bool = True) -> None:
    """A TLM preset; ``logged``: one that logs an explanation with every score (cleanlab-tlm
    refuses ``log=["explanation"]`` at low and base)."""
    known = preset in get_args(QualityPreset)
    if known and (not logged or preset in EXPLAINING_PRESETS):
        return
    if not known:
        raise ConfigError(
            f"quality_preset={preset!r} is not a TLM quality preset; use one of "
            f"{', '.join(get_args(QualityPreset))}."
        )
    raise ConfigError(
        f"quality_preset={preset!r} cannot log an explanation with every score (cleanlab-tlm "
        f"refuses it); use explain=low_trust, or one of {', '.join(EXPLAINING_PRESETS)}."
    )
