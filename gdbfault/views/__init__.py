"""Showing one run: the report (table, JSON, CSV, markdown), its saved file, and plots."""
