"""Streams on one Prefect server: two Langfuse projects with the same tags and score name keep
their own record of evaluated days, window lock and artifacts; two projects on one worker take
their keys from the Secret blocks their deployments name."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from flows.daily import daily
from flows.evaluate_traces import evaluate_traces
from flows.evaluated_days import evaluated_days
from flows.window_lock import lock_names, window_lock
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.errors import ConfigError
from tasks.windows import midnight
from tests.support.seeding import TAG, artifact_keys, seed, stream_of, windows_at_once

pytestmark = pytest.mark.usefixtures("prefect_harness")
LOG = logging.getLogger("tests.flow.streams")


def test_two_projects_with_the_same_tags_and_score_name_keep_apart(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = langfuse_sandbox
    today = datetime.now(UTC).date()
    yesterday, before = today - timedelta(days=1), today - timedelta(days=2)
    start, end = midnight(before), midnight(yesterday)
    with LangfuseSandbox() as b:  # another project: its own keys and project id
        seed(a, 2, start=midnight(before) + timedelta(hours=6))
        seed(b, 3, start=midnight(before) + timedelta(hours=6))
        stream_a, stream_b = stream_of(a), stream_of(b)
        assert stream_a.tags == stream_b.tags and stream_a.score_name == stream_b.score_name
        assert lock_names(stream_a, start, end) != lock_names(stream_b, start, end)

        report_a = evaluate_traces(tags=[TAG], window_start=start, window_end=end)  # A's day
        assert report_a.uploaded == 2
        assert evaluated_days(stream_a, [before], LOG) == {before}
        assert evaluated_days(stream_b, [before], LOG) == set()  # B's record knows nothing

        for name, value in b.env().items():
            monkeypatch.setenv(name, value)
        # A holds its lock on the day: B's run of the same day does not wait for it
        monkeypatch.setenv("TRUST_EVAL_LOCK_TIMEOUT_S", "1")
        with window_lock(stream_a, start, end, lease_s=60, timeout_s=1):
            report_b = evaluate_traces(tags=[TAG], window_start=start, window_end=end)
        assert report_b.uploaded == 3 and report_b.already_scored == 0
        keys_a, keys_b = artifact_keys(report_a.flow_run_id), artifact_keys(report_b.flow_run_id)
        assert len(keys_a) == len(keys_b) == 2 and keys_a.isdisjoint(keys_b)
        assert evaluated_days(stream_b, [before], LOG) == {before}
        assert len(a.store.all_scores()) == 2 and len(b.store.all_scores()) == 3


def test_a_daily_run_of_one_project_does_not_skip_a_day_another_project_evaluated(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = langfuse_sandbox
    today = datetime.now(UTC).date()
    missed = today - timedelta(days=2)
    with LangfuseSandbox() as b:
        seed(a, 1, start=midnight(missed) + timedelta(hours=3))
        theirs = seed(b, 2, start=midnight(missed) + timedelta(hours=3))
        end = midnight(today - timedelta(days=1))
        evaluate_traces(tags=[TAG], window_start=midnight(missed), window_end=end)  # A's day
        for name, value in b.env().items():
            monkeypatch.setenv(name, value)
        summary = daily(tags=[TAG], catch_up_days=1)  # B's daily: yesterday and the missed day
        assert summary.caught_up == [missed]
        assert {s.trace_id for s in b.store.all_scores()} == set(theirs)
        assert evaluated_days(stream_of(b), [missed], LOG) == {missed}


def test_runs_whose_tag_sets_overlap_pay_once_for_the_traces_they_share(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """``--tag A`` and ``--tag A --tag B`` at the same time, on traces tagged A and B: their
    score ids coincide, so they take the same lock; the second finds the first's scores."""
    lf = langfuse_sandbox
    ids = seed(lf, 20, tags=("A", "B"))
    runs = windows_at_once(["A", ["A", "B"]], own_score=False)
    assert sorted((r.uploaded, r.already_scored) for r in runs) == [(0, 20), (20, 0)]
    assert len(tlm.prompts) == 20  # not 40
    assert sorted(str(s.trace_id) for s in lf.store.all_scores()) == sorted(ids)


def test_only_a_complete_evaluation_marks_a_day_and_a_foreign_record_is_a_warning(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.variables import Variable

    from flows.options import EvalOptions

    lf = langfuse_sandbox
    today = datetime.now(UTC).date()
    trial, broken = today - timedelta(days=3), today - timedelta(days=2)
    seed(lf, 3, start=midnight(trial) + timedelta(hours=1))
    seed(lf, 2, start=midnight(broken) + timedelta(hours=1))
    stream = stream_of(lf)
    capped = evaluate_traces(
        tags=[TAG], window_start=midnight(trial), window_end=midnight(trial + timedelta(days=1)),
        options=EvalOptions(max_traces=1),
    )  # fmt: skip
    assert capped.capped and capped.uploaded == 1
    assert evaluated_days(stream, [trial], LOG) == set()  # a trial run is not the day done
    Variable.set(stream.day_record_name(broken), {"days": ["2026-13-45"]}, overwrite=True)
    with caplog.at_level("WARNING"):
        assert evaluated_days(stream, [trial, broken], LOG) == set()
    assert any("not one this project wrote" in r.getMessage() for r in caplog.records)
    summary = daily(tags=[TAG], catch_up_days=3)  # catches both up, the broken record too
    assert set(summary.caught_up) >= {trial, broken}
    assert len(lf.store.all_scores()) == 5 and len(tlm.prompts) == 5
    assert evaluated_days(stream, [trial, broken], LOG) == {trial, broken}


# --- two projects on one worker: credentials from Secret blocks --------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_streams() -> dict[str, dict[str, Any]]:
    """The README's two daily streams on two projects (its prefect.yaml example), by name."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    (example,) = [b for b in blocks if "daily-project-b" in b]
    return {d["name"]: d for d in yaml.safe_load(example)}


def run_environment(job_variables: dict[str, Any]) -> dict[str, str]:
    """What a process worker adds to a deployment's flow run's environment, resolved by Prefect's
    own code (the pool's default job template and the deployment's job variables)."""
    from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    made = ProcessJobConfiguration.from_template_and_values(template, job_variables)
    config: ProcessJobConfiguration = asyncio.run(made)
    return {k: v for k, v in (config.env or {}).items() if v is not None}


def test_two_projects_on_one_worker_take_their_keys_from_secret_blocks(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    a = langfuse_sandbox  # the worker's environment holds project A's keys
    b = a.add_project("project b")  # the same server, another key pair and project
    streams = readme_streams()
    assert set(streams) == {"daily-support-bot", "daily-project-b"}
    Secret(value=SecretStr(b.public_key)).save("langfuse-public-key-projectb", overwrite=True)
    Secret(value=SecretStr(b.secret_key)).save("langfuse-secret-key-projectb", overwrite=True)

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    noon = midnight(yesterday) + timedelta(hours=12)
    support_a = seed(a, 3, tags=("support_bot",), start=noon)
    pipeline_a = seed(a, 2, tags=(TAG,), start=noon)  # A's, with project B's tag: not B's
    pipeline_b = seed(cast(LangfuseSandbox, b), 4, tags=(TAG,), start=noon)  # seed uses .store

    worker_env = dict(os.environ)
    for name, dep in streams.items():
        added = run_environment(dep["work_pool"]["job_variables"])
        assert b.secret_key not in json.dumps(added)  # the deployment names blocks, no keys
        with monkeypatch.context() as run:
            for key, value in (worker_env | added).items():
                run.setenv(key, value)
            summary = daily(**dep["parameters"])
        assert summary.ok, name

    scored_a = sorted(s.trace_id or "" for s in a.store.all_scores())
    scored_b = sorted(s.trace_id or "" for s in b.store.all_scores())
    assert scored_a == sorted(support_a)  # A's support_bot stream, in A only
    assert scored_b == sorted(pipeline_b)  # B's stream, with B's keys, in B only
    assert not set(pipeline_a) & set(scored_a)

    # a block that does not exist: one line naming the variable and the block
    monkeypatch.setenv("LANGFUSE_SECRET_KEY_BLOCK", "langfuse-secret-key-nope")
    with pytest.raises(ConfigError) as refused:
        evaluate_traces(tags=[TAG], window_start=midnight(yesterday), window_end=noon)
    assert str(refused.value).startswith(
        "LANGFUSE_SECRET_KEY_BLOCK=langfuse-secret-key-nope: the Prefect server has no Secret "
        "block 'langfuse-secret-key-nope'"
    )
    assert "\n" not in str(refused.value)
