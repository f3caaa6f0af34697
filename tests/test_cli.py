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


def test_a_typo_in_backbone_or_loss_fails_before_tensorflow_loads():
    # Parsed in a fresh process: the refusal comes from argparse, with TensorFlow never imported.
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from sare_tf.cli import main\n"
        "for flag, typo in (('--backbone', 'vgg17'), ('--loss', 'sare-jiont')):\n"
        "    try:\n"
        "        main(['train', '--dataset', 'x.mat', flag, typo])\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 2, stop.code\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False False"
    assert (
        "invalid choice: 'vgg17'" in result.stderr
        and "invalid choice: 'sare-jiont'" in result.stderr
    )


def test_every_command_accepts_quiet():
    from sare_tf.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert len(commands) >= 14
    for name, sub in commands.items():
        assert any("--quiet" in action.option_strings for action in sub._actions), name
