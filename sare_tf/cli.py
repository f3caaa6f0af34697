"""The ``sare-tf`` command.

Each subcommand lives in its own module under ``sare_tf/commands`` (``make_synthetic.py``
gives ``sare-tf make-synthetic``) and provides ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Command modules import TensorFlow inside ``run`` so that
``sare-tf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from sare_tf._version import __version__
from sare_tf.commands._stderr_filter import StderrFilter
from sare_tf.config_options import add_quiet_argument
from sare_tf.progress import show_progress_bars


def _command_modules() -> dict[str, str]:
    import sare_tf.commands as commands

    found = {}
    for info in pkgutil.iter_modules(commands.__path__):
        if not info.name.startswith("_"):
            found[info.name.replace("_", "-")] = f"sare_tf.commands.{info.name}"
    return dict(sorted(found.items()))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (not when the handler was
    made): a redirected or replaced stderr gets the lines, a closed one is never written to."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass  # always the current sys.stderr


def _configure_logging(quiet: bool) -> None:
    """Library modules log to "sare_tf.*"; the command shows INFO lines unless --quiet."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("sare_tf")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="sare-tf",
        description=(
            "Image-based localization with NetVLAD descriptors trained by the SARE loss family "
            "(Liu, Li, Dai, ICCV 2019). Start with `sare-tf demo`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sare-tf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in _command_modules().items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(sub)
        add_quiet_argument(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sare-tf`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    quiet = bool(getattr(args, "quiet", False))
    _configure_logging(quiet)
    show_progress_bars(not quiet)
    try:
        with StderrFilter():
            return _run_command(args)
    finally:
        show_progress_bars(True)  # the process may go on (tests, notebooks calling main)


def _run_command(args) -> int:
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("\nsare-tf: interrupted.", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as error:
        # Library errors carry the file or value at fault; a traceback adds nothing for users.
        print(f"sare-tf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # TensorFlow raises OpError subclasses (e.g. a bad image met inside tf.data with the
        # "error" policy); their message names the file, the traceback does not help.
        if type(error).__module__.startswith("tensorflow") and hasattr(error, "message"):
            print(f"sare-tf {args.command}: error: {error.message}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
