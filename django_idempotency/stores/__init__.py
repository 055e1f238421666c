"""Stores: where records live. ``base`` is the seam; each backend is a package beside it."""
