"""`sare_tf.progress.ProgressBar`: what a user sees of long work, and that it never gets in the way."""

from __future__ import annotations

import io

from sare_tf.progress import ProgressBar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_one_line_per_tenth_and_the_total():
    stream = io.StringIO()
    bar = ProgressBar(1000, "image", stream=stream)
    for done in range(1, 1001):
        bar.update(done)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # 10 %, 20 %, ..., 100 %
    assert lines[0].startswith("[==>") and " 100/1000 images  10%" in lines[0]
    assert " 1000/1000 images 100%" in lines[-1] and "ETA" not in lines[-1]


def test_a_terminal_gets_the_bar_redrawn_in_place_and_a_final_newline():
    stream = _Terminal()
    bar = ProgressBar(3, "query", stream=stream)
    bar.add(1)
    bar.add(2)
    text = stream.getvalue()
    assert text.startswith("\r[") and text.endswith("\n")
    assert text.count("\r") == 2  # two draws: the first update and the final one
    assert "3/3 queries 100%" in text


def test_disabled_or_empty_bars_write_nothing_and_count_anyway():
    stream = io.StringIO()
    quiet = ProgressBar(5, "image", enabled=False, stream=stream)
    quiet.add(3)
    ProgressBar(0, "image", stream=stream).update(0)
    assert stream.getvalue() == "" and quiet.done == 3


def test_a_closed_stream_does_not_stop_the_work():
    stream = io.StringIO()
    stream.close()
    bar = ProgressBar(2, "image", stream=stream)
    bar.update(2)  # no exception
    assert not bar.enabled


def test_counts_are_clipped_to_the_total():
    bar = ProgressBar(4, "image", enabled=False)
    bar.update(9)
    assert bar.done == 4
    assert "4/4 images 100%" in bar.text()


def test_quiet_on_the_command_line_turns_every_bar_off(tmp_path, capsys):
    from sare_tf.cli import main

    out = tmp_path / "city"
    flags = ["make-synthetic", str(out), "--preset", "tiny", "--streets", "1", "1", "1"]
    assert main([*flags, "--quiet"]) == 0
    assert "images" not in capsys.readouterr().err  # no bar, no summary line
    assert main([*flags, "--force"]) == 0
    assert "/" in capsys.readouterr().err and ProgressBar(1, enabled=True).enabled  # back on
