"""Entry point for ``make bench`` (``.venv/bin/python -m benchmarks``)."""

from benchmarks.cli import main

raise SystemExit(main())
