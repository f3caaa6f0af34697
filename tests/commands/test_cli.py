"""The `sare-tf` entry point: help, version, and that importing the package is quiet."""

from __future__ import annotations

import subprocess
import sys

import pytest

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

    def leaves(parser, path):
        """Every (sub)command parser that runs something: `index info`, `bench peak`, ..."""
        nested = [a for a in parser._actions if isinstance(a.choices, dict)]  # subparsers
        if not nested:
            yield path, parser
        for action in nested:
            for name, sub in action.choices.items():
                yield from leaves(sub, f"{path} {name}")

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert len(commands) >= 14
    found = list(leaves(parser, "sare-tf"))
    assert {"sare-tf index info", "sare-tf index merge", "sare-tf bench peak"} <= {
        p for p, _ in found
    }
    for path, sub in found:
        assert any("--quiet" in action.option_strings for action in sub._actions), path


@pytest.mark.slow
def test_no_cuda_probe_error_line_on_a_machine_without_nvidia_driver():
    """TensorFlow's absl lines are written to fd 2 below Python; whether this machine's
    TensorFlow prints the cuInit line depends on its CUDA libraries, so the line is also written
    to fd 2 directly, exactly as absl formats it."""
    script = (
        "import os, sys; from sare_tf.commands._stderr_filter import StderrFilter\n"
        "def op():\n"
        "    import tensorflow as tf; print(float(tf.constant(1.0) + 1), flush=True)\n"
        "    os.write(2, b'E0000 00:00:1796605267.307478   21589 cuda_platform.cc:52] failed call"
        " to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\\n')\n"
        "    print('a real error line', file=sys.stderr)\n"
        "if sys.argv[1] == 'cli':\n"
        "    with StderrFilter(): op()\n"
        "else:\n"
        "    op()\n"
    )

    def stderr_of(mode):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and done.stdout.strip() == "2.0", done.stderr
        return done.stderr

    assert "cuInit" in stderr_of("plain")
    filtered = stderr_of("cli")
    assert "cuInit" not in filtered and "absl::InitializeLog" not in filtered
    assert "a real error line" in filtered


def test_stderr_filter_drops_only_known_noise_and_passes_progress_at_once():
    from sare_tf.commands._stderr_filter import filter_lines

    noise = b"E0000 00:00:17.1 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
    out, held = filter_lines(b"", b"Encoding 3/10\r")
    assert (out, held) == (b"Encoding 3/10\r", b"")  # a progress bar is not held back
    out, held = filter_lines(b"", noise[:20])
    assert (out, held) == (b"", noise[:20])  # the start of a log line waits for its end
    out, held = filter_lines(held, noise[20:] + b"E0000 00:00 other.cc:1] kept\nEpoch")
    assert out == b"E0000 00:00 other.cc:1] kept\nEpoch" and held == b""
