"""The CLI's arguments: one flag per option of the flows, dates and durations parsed, and a bad
argument refused in one line (exit 2) like every other refusal."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import NoReturn

from flows.options import EvalOptions, options_from
from tasks.errors import ConfigError
from tasks.windows import duration


class Parser(argparse.ArgumentParser):
    """A bad argument is one line (exit 2), like every other refusal."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see {self.prog} --help)")


def arg(parse: Callable[[str], typing.Any]) -> Callable[[str], typing.Any]:
    """An argparse type from a parser that raises ConfigError."""

    def convert(text: str) -> typing.Any:
        try:
            return parse(text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


def parse_duration(text: str) -> timedelta:
    """``90m``, ``24h``, ``7d``, ``1w``, ``3600s`` (or a bare number of seconds)."""
    return duration(text, name="")


def parse_datetime(text: str) -> datetime:
    """ISO 8601 with a timezone (``Z`` accepted); a bare date means 00:00 UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not an ISO 8601 date/time: {text!r}") from None
    if value.tzinfo is None and len(text.strip()) == 10:
        value = value.replace(tzinfo=UTC)
    return value


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m flows.cli",
        description="Score Langfuse traces with Cleanlab TLM, ad hoc (no server needed).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tag = Parser(add_help=False)
    tag.add_argument(
        "--tag", dest="tags", action="append", required=True, help="trace tag (repeatable)"
    )
    common = Parser(add_help=False, parents=[tag])
    add_option_flags(common)
    common.add_argument("--show", type=int, default=20, help="rows of the lowest-trust table")
    common.add_argument("--yes", action="store_true", help="do not ask before a large run")

    win = sub.add_parser("window", parents=[common], help="evaluate one time window")
    when = win.add_mutually_exclusive_group(required=True)
    when.add_argument("--since", type=arg(parse_duration), help="from this long ago, e.g. 24h")
    when.add_argument("--start", type=arg(parse_datetime), help="window start, ISO 8601")
    win.add_argument(
        "--end", type=arg(parse_datetime), help="window end (default: now - settle lag)"
    )

    back = sub.add_parser("backfill", parents=[common], help="evaluate whole past UTC days")
    back.add_argument("--start-date", type=arg(parse_date), required=True, help="first day")
    back.add_argument("--end-date", type=arg(parse_date), required=True, help="last day (UTC)")
    back.add_argument("--max-concurrency", type=int, default=4, help="days at a time (1-64)")

    rep = sub.add_parser(
        "report", parents=[tag], help="the lowest scores of a range, from Langfuse (no TLM)"
    )
    span = rep.add_mutually_exclusive_group(required=True)
    span.add_argument("--since", type=arg(parse_duration), help="up to now, e.g. 7d")
    span.add_argument("--start", type=arg(parse_datetime), help="range start, ISO 8601")
    rep.add_argument("--end", type=arg(parse_datetime), help="range end (default: now)")
    rep.add_argument("--score-name", default="trust_score", help="the score the runs wrote")
    rep.add_argument("--below", type=float, default=0.5, help="low trust below this (0-1)")
    rep.add_argument("--limit", type=int, default=20, help="rows of the lowest table (1-1000)")
    sub.add_parser("verdicts", parents=[common], help="reviewers' verdicts; the trust trend")
    return parser


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of EvalOptions (``--score-name``, ``--no-score-config``...), with the
    field's description as help: the CLI can set every option the flows take."""
    for name, info in EvalOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = info.description or ""
        kind = info.annotation
        args = typing.get_args(kind)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {info.default})")  # fmt: skip
        elif typing.get_origin(kind) is typing.Literal:  # checked by EvalOptions: one line
            parser.add_argument(flag, metavar="{" + ",".join(args) + "}", default=None,
                                help=f"{help_text} (default: {info.default})")  # fmt: skip
        elif list[str] in args or typing.get_origin(kind) is list:
            parser.add_argument(
                flag, action="append", default=None, help=f"{help_text} (repeatable)"
            )
        else:
            number = next((t for t in (int, float) if t in (kind, *args)), str)
            parser.add_argument(flag, type=number, default=None,
                                help=f"{help_text} (default: {info.default})")  # fmt: skip


def options_of(args: argparse.Namespace) -> EvalOptions:
    """The options the flags set; the rest keep their defaults."""
    given = {k: getattr(args, k) for k in EvalOptions.model_fields if getattr(args, k) is not None}
    return options_from(given)
