"""Test kits for users of sagakit and for the authors of new backends."""
