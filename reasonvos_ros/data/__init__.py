"""Test and benchmark data made from real media that Debian packages ship (no downloads)."""
