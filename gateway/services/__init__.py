"""Use cases: one function each, taking the Runtime and plain values."""
