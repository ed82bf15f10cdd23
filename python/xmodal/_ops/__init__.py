"""Implementations behind :mod:`xmodal.ops`, one module per op family (public names live in ops)."""
