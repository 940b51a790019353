"""`python -m sandbox`: serve the Langfuse, TLM and OpenAI sandboxes until Ctrl-C.

Stable ports and keys by default, so that a Prefect worker or a shell configured once keeps
working across restarts (the data does not survive one: it lives in memory):

    Langfuse  http://127.0.0.1:3030   pk-lf-sandbox / sk-lf-sandbox
    TLM       http://127.0.0.1:3031   tlm-sandbox
    OpenAI    http://127.0.0.1:3032   sk-sandbox

Keys: flags, else SANDBOX_LANGFUSE_PUBLIC_KEY, SANDBOX_LANGFUSE_SECRET_KEY, SANDBOX_TLM_API_KEY,
SANDBOX_OPENAI_API_KEY, else the defaults above. The environment that points the SDKs and the
flows at the sandboxes is printed and written to an env file (``.sandbox.env``, git-ignored):
``source .sandbox.env``. Sandbox TLM scores are synthetic; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import threading
from pathlib import Path

DEFAULT_LANGFUSE_PORT = 3030
DEFAULT_TLM_PORT = 3031
DEFAULT_OPENAI_PORT = 3032
DEFAULT_KEYS: dict[str, str] = {
    "SANDBOX_LANGFUSE_PUBLIC_KEY": "pk-lf-sandbox",
    "SANDBOX_LANGFUSE_SECRET_KEY": "sk-lf-sandbox",
    "SANDBOX_TLM_API_KEY": "tlm-sandbox",
    "SANDBOX_OPENAI_API_KEY": "sk-sandbox",
}
ENV_FILE = ".sandbox.env"


def key(name: str) -> str:
    """A sandbox key: ``$name`` when set, else its documented default."""
    return os.environ.get(name) or DEFAULT_KEYS[name]


def langfuse_keys() -> tuple[str, str]:
    """The sandbox Langfuse key pair ``python -m sandbox`` serves by default."""
    return key("SANDBOX_LANGFUSE_PUBLIC_KEY"), key("SANDBOX_LANGFUSE_SECRET_KEY")


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """``export NAME=value`` lines a shell can ``source`` (owner-only: it holds keys)."""
    lines = ["# written by `python -m sandbox`: source this file to use the sandboxes"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    from sandbox.langfuse import PROFILES, LangfuseSandbox
    from sandbox.openai_app import OpenAISandbox
    from sandbox.tlm import Latency, TLMSandbox

    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description=__doc__.split("\n\n")[0],
        epilog="`python -m sandbox seed --help`: past-dated traces into a running sandbox.",
    )
    parser.add_argument("--langfuse-port", type=int, default=DEFAULT_LANGFUSE_PORT)
    parser.add_argument("--tlm-port", type=int, default=DEFAULT_TLM_PORT)
    parser.add_argument("--openai-port", type=int, default=DEFAULT_OPENAI_PORT)
    parser.add_argument(
        "--langfuse-profile",
        choices=PROFILES,
        default="current",
        help="the Langfuse server modelled: current (Cloud / v4.59+) or v4.16 (self-hosted)",
    )
    keys = parser.add_argument_group("keys (default: $SANDBOX_..., else the documented ones)")
    public_key, secret_key = langfuse_keys()
    keys.add_argument("--langfuse-public-key", default=public_key, help="%(default)s")
    keys.add_argument("--langfuse-secret-key", default=secret_key, help="%(default)s")
    keys.add_argument("--tlm-api-key", default=key("SANDBOX_TLM_API_KEY"), help="%(default)s")
    keys.add_argument("--openai-api-key", default=key("SANDBOX_OPENAI_API_KEY"), help="%(default)s")
    parser.add_argument(
        "--env-file",
        default=ENV_FILE,
        help="where to write the environment (default %(default)s; '' to write none)",
    )
    tlm_load = parser.add_argument_group("TLM load")
    tlm_load.add_argument("--tlm-latency", type=float, default=0.0, help="s per item (mean)")
    tlm_load.add_argument("--tlm-latency-p99", type=float, help="log-normal with this p99 (s)")
    tlm_load.add_argument("--tlm-seed", type=int, default=0, help="seed of the latency draws")
    tlm_load.add_argument("--tlm-max-in-flight", type=int, help="concurrency ceiling")
    tlm_load.add_argument("--tlm-over-status", type=int, choices=(429, 503), default=429)
    args = parser.parse_args(argv)
    latency = (
        Latency.lognormal(args.tlm_latency, args.tlm_latency_p99, args.tlm_seed)
        if args.tlm_latency_p99 is not None
        else Latency.fixed(args.tlm_latency)
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        LangfuseSandbox(
            port=args.langfuse_port,
            profile=args.langfuse_profile,
            public_key=args.langfuse_public_key,
            secret_key=args.langfuse_secret_key,
        ) as lf,
        TLMSandbox(
            port=args.tlm_port,
            api_key=args.tlm_api_key,
            latency=latency,
            max_in_flight=args.tlm_max_in_flight,
            over_status=args.tlm_over_status,
        ) as tlm,
        OpenAISandbox(port=args.openai_port, api_key=args.openai_api_key) as oai,
    ):
        print(f"Langfuse sandbox: {lf.url}  (health: {lf.url}/api/public/health)")
        print(f"                  profile {lf.profile}, server version {lf.version}")
        print(f"TLM sandbox:      {tlm.base_url}  (scores are SYNTHETIC; {latency.describe()})")
        print(f"OpenAI sandbox:   {oai.base_url}  (recorded answers)")
        env = lf.env() | tlm.env() | oai.env()
        print("\n# point the SDKs and the flows at them:")
        for name, value in env.items():
            print(f"export {name}={shlex.quote(value)}")
        if args.env_file:
            path = Path(args.env_file)
            write_env_file(path, env)
            print(f"\n# or, in any shell: source {shlex.quote(str(path.resolve()))}")
        print(
            "# past-dated traces to score: python -m sandbox seed --days 7 --per-day 20"
            "\n\nCtrl-C to stop.",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
