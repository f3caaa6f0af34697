"""Keeps TensorFlow's C++ start-up notices off a command-line user's terminal.

TensorFlow writes them to file descriptor 2 through absl before its logging is configured, so
neither `TF_CPP_MIN_LOG_LEVEL` nor Python's logging reach them: on a machine without an NVIDIA
driver every command printed "failed call to cuInit: ... UNKNOWN ERROR (303)" as an error. The
filter puts a pipe behind fd 2 and forwards everything except the lines of `NOISE`; partial
lines (progress bars redrawn with carriage returns) are forwarded at once unless they look like
the start of such a log line. `SARE_TF_RAW_STDERR=1` turns it off.
"""

from __future__ import annotations

import os
import re
import sys
import threading

NOISE = (
    b"failed call to cuInit",
    b"Could not find cuda drivers on your machine",
    b"All log messages before absl::InitializeLog() is called are written to STDERR",
    b"oneDNN custom operations are on",
    b"Unable to register cuDNN factory",
    b"Unable to register cuFFT factory",
    b"Unable to register cuBLAS factory",
    b"computation placer already registered",
)
_LOG_LINE_START = re.compile(rb"^(?:[IWEF]\d{0,4}(?: |$)|WARNING: All)")


def filter_lines(pending: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """`(bytes to write, bytes held back)` after `chunk` arrived behind `pending`."""
    data = pending + chunk
    *lines, rest = data.split(b"\n")
    out = b"".join(line + b"\n" for line in lines if not any(n in line for n in NOISE))
    if rest and not _LOG_LINE_START.match(rest):
        return out + rest, b""
    return out, rest


class StderrFilter:
    """`with StderrFilter(): ...` filters fd 2 for the block (a no-op where fd 2 cannot be
    replaced, or with SARE_TF_RAW_STDERR=1)."""

    def __enter__(self):
        self._saved = None
        if os.environ.get("SARE_TF_RAW_STDERR") == "1":
            return self
        try:
            sys.stderr.flush()
            read_fd, write_fd = os.pipe()
            self._saved = os.dup(2)
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except (OSError, ValueError):
            self._saved = None
            return self
        self._thread = threading.Thread(target=self._forward, args=(read_fd,), daemon=True)
        self._thread.start()
        return self

    def _forward(self, read_fd: int) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out, pending = filter_lines(pending, chunk)
            if out:
                os.write(self._saved, out)
        if pending:
            os.write(self._saved, pending)
        os.close(read_fd)

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # closes the pipe's last writer: the thread drains and ends
        self._thread.join(timeout=5)
        os.close(self._saved)
        return False
