"""`python -m sandbox`: serve the Langfuse, TLM and OpenAI sandboxes until Ctrl-C.

Prints the URLs and the environment to export so that the real SDKs (and this project's flows)
talk to them. Sandbox TLM scores are synthetic; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from sandbox.langfuse import PROFILES, LangfuseSandbox
from sandbox.openai_app import OpenAISandbox
from sandbox.tlm import Latency, TLMSandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--langfuse-port", type=int, default=3030)
    parser.add_argument("--tlm-port", type=int, default=3031)
    parser.add_argument("--openai-port", type=int, default=3032)
    parser.add_argument(
        "--langfuse-profile",
        choices=PROFILES,
        default="current",
        help="the Langfuse server modelled: current (Cloud / v4.59+) or v4.16 (self-hosted)",
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
        LangfuseSandbox(port=args.langfuse_port, profile=args.langfuse_profile) as lf,
        TLMSandbox(
            port=args.tlm_port,
            latency=latency,
            max_in_flight=args.tlm_max_in_flight,
            over_status=args.tlm_over_status,
        ) as tlm,
        OpenAISandbox(port=args.openai_port) as oai,
    ):
        print(f"Langfuse sandbox: {lf.url}  (health: {lf.url}/api/public/health)")
        print(f"                  profile {lf.profile}, server version {lf.version}")
        print(f"TLM sandbox:      {tlm.base_url}  (scores are SYNTHETIC; {latency.describe()})")
        print(f"OpenAI sandbox:   {oai.base_url}  (recorded answers)")
        print("\n# point the SDKs and the flows at them:")
        for name, value in (lf.env() | tlm.env() | oai.env()).items():
            print(f"export {name}={value}")
        print("\nCtrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
