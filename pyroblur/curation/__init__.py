"""Curation in FiftyOne: import, validate, deduplicate, balance, split, export, and the App."""
