"""The help formatter every samrt command line uses: each option's help ends with its
default, unless the default is "nothing" (None, False, an empty list) or the help text
already says what the default is."""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter", "says_its_default"]


def says_its_default(action: argparse.Action) -> bool:
    """Whether ``action``'s help (as :class:`HelpFormatter` renders it) states its default."""
    text = action.help or ""
    return "%(default)" in text or "default" in text.lower()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            says_its_default(action)
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"
