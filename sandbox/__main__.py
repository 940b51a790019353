"""`python -m sandbox [options]`: serve the sandboxes (:mod:`sandbox.serve`)."""

from __future__ import annotations

from sandbox.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
