from __future__ import annotations

from branching_ops.demo.cli import main

raise SystemExit(main(prog="python -m branching_ops.demo"))
