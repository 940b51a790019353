"""`python -m sandbox [options]`: serve the sandboxes (:mod:`sandbox.serve`);
`python -m sandbox seed [options]`: past-dated traces into a running one (:mod:`sandbox.seed`)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["seed"]:
        from sandbox.seed import main as seed

        return seed(args[1:])
    from sandbox.serve import main as serve

    return serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
