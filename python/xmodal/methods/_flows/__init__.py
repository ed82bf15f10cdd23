"""Shared parts of the normalising-flow methods (FastFlow, CFlow, CS-Flow, DifferNet).

:mod:`.coupling` holds the invertible coupling blocks (written once, tested against autograd),
:mod:`.detector` the training loop, feature caching and persistence the four methods share.
"""
