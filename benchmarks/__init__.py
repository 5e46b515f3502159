"""sagakit's benchmark suite: the engine against the hand-written orchestrator it replaces.

Run it with ``make bench``; it prints a table and writes ``docs/benchmarks.md``.
"""
