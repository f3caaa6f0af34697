"""The `sare-tf` entry point: help, version, and that importing the package is quiet."""

from __future__ import annotations

import subprocess
import sys

import sare_tf


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "sare_tf", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_subcommands():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: sare-tf" in result.stdout


def test_version():
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"sare-tf {sare_tf.__version__}"


def test_every_subcommand_has_help():
    from sare_tf.cli import _command_modules

    for name in _command_modules():
        result = _run(name, "--help")
        assert result.returncode == 0, (name, result.stderr)


def test_import_prints_nothing_and_loads_no_tensorflow():
    code = "import sys, sare_tf; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout == "False\n"
    assert result.stderr == ""
