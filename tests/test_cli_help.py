"""Every option of every samrt command line explains itself: help text, and its default
(argparse's own list of the parser's actions is the oracle of what there is to explain)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from samrt._help import HelpFormatter
from samrt.backends import BACKEND_NAMES


def _parsers() -> Iterator[argparse.ArgumentParser]:
    from samrt.bench import _parser as bench_parser
    from samrt.cli import _parser as samrt_parser
    from samrt.serve.cli import parser as serve_parser
    from samrt.trt_build import _parser as build_parser
    from samrt_export.cli import _parser as export_parser

    main = samrt_parser()
    yield main
    for action in main._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name not in ("export", "build", "serve"):  # those parse their own (below)
                    yield sub
    yield export_parser()
    yield build_parser()
    yield serve_parser()
    yield bench_parser()


PARSERS = list(_parsers())


@pytest.mark.parametrize("parser", PARSERS, ids=[p.prog for p in PARSERS])
def test_every_option_has_help_and_shows_its_default(parser: argparse.ArgumentParser) -> None:
    assert issubclass(parser.formatter_class, HelpFormatter)
    parser.format_help()  # renders (a bad %-format in a help string raises here)
    formatter = parser._get_formatter()
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        assert isinstance(action.help, str) and action.help.strip(), f"{parser.prog} {name}: no help"
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{parser.prog} {choice.dest}: no help"
        if action.default in (None, False, [], argparse.SUPPRESS):
            continue
        shown = formatter._get_help_string(action)
        assert "%(default)" in shown or "default" in shown.lower(), (
            f"{parser.prog} {name}: default {action.default!r} not shown"
        )


@pytest.mark.parametrize("prog", ["samrt segment", "samrt serve"])
def test_backend_help_lists_every_backend(prog: str) -> None:
    parser = next(p for p in PARSERS if p.prog == prog)
    text = " ".join(parser.format_help().split())
    for name in ("auto", *BACKEND_NAMES):
        assert name in text


def test_bench_backends_help_lists_its_backends() -> None:
    from samrt.backends import BACKENDS

    parser = next(p for p in PARSERS if p.prog == "samrt-bench")
    text = " ".join(parser.format_help().split())
    for name in BACKENDS:
        assert name in text
