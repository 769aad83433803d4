"""Differential tests: guard against the frameworks' own request parsers."""
