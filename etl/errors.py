"""Errors every part can raise without importing another: the command line maps them to its exit codes."""

from __future__ import annotations


class InputError(Exception):
    """An argument or an input file is unusable; the message says which and what to do (exit code 2)."""
