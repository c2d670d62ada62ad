"""Errors every part can raise without importing another: the command line maps them to its exit codes."""

from __future__ import annotations


class InputError(Exception):
    """An argument or an input file is unusable; the message says which and what to do (exit code 2)."""


class EtlError(Exception):
    """The night cannot be processed; the message says what is wrong and what to do."""
