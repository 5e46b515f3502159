"""Worked examples that ship with sagakit, so ``sagakit demo`` can run them anywhere."""
