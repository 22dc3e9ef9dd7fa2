"""The options every cdfv command shares: --version, --threads and --quiet. They act while Click
parses (eager callbacks), before a command body imports torch, so --version answers at once and
the thread cap reaches the libraries as they load."""
from __future__ import annotations

import logging
from typing import Any, Callable

import click

from cdfv import progress, threads
from cdfv.logs import log_to_stderr

F = Callable[..., Any]


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from cdfv.provenance import describe

    click.echo(f"{ctx.find_root().info_name}: {describe()}")
    ctx.exit()


def version_option(fn: F) -> F:
    """--version: cdfv's version and commit, the libraries that shape results, Python and the machine."""
    return click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
                        help="Show cdfv's version (and git commit), torch, compressai, dlib, Python and the device; exit.")(fn)


def _cap_threads(_ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    if value is not None:
        threads.cap(value)


def _quiet(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    log_to_stderr(logging.WARNING if value else logging.INFO)


def common_options(fn: F) -> F:
    """--threads N ($CDFV_THREADS) and --quiet ($CDFV_QUIET) on a command that does work."""
    fn = click.option("--quiet", is_flag=True, envvar="CDFV_QUIET", expose_value=False, callback=_quiet,
                      help="No progress bars or messages: only results on stdout, warnings and errors on stderr "
                           "(also $CDFV_QUIET=1).")(fn)
    return click.option("--threads", type=click.IntRange(min=1), envvar=threads.ENV, expose_value=False, is_eager=True,
                        callback=_cap_threads, metavar="N",
                        help=f"Cap torch, OpenMP, BLAS and OpenCV CPU threads and CPU worker pools at N (also ${threads.ENV}).")(fn)


def passed_on() -> list[str]:
    """The shared options a command run inside another (by cdfv-reproduce, cdfv-demo) takes from
    it: --quiet when that one is quiet (the thread cap travels in $CDFV_THREADS)."""
    return [] if progress.shown() else ["--quiet"]
