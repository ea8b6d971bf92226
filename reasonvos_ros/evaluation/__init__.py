"""Offline evaluation: ReVOS metrics and format, the mini composited dataset, ``reasonvos segment`` / ``eval``."""
