"""Reporting: markdown, terminal, HTML and plots, rendered from stored rows only."""
