"""`read_body`: request bodies past the limit are refused with 413, announced or streamed."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("starlette")

from starlette.requests import Request

from sare_tf.serving.app import DRAIN_FACTOR, BodyTooLarge, read_body


def _request(chunks, content_length=None):
    """A real Starlette request whose body arrives in `chunks` (chunked without a length)."""
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    received = []

    async def receive():
        received.append(len(received))
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, receive), received


def test_a_body_within_the_limit_is_read_whole():
    request, _ = _request([b"ab", b"cd"])
    assert asyncio.run(read_body(request, limit=4)) == b"abcd"


@pytest.mark.parametrize("announced", [False, True])
def test_a_body_past_the_limit_is_read_on_and_refused(announced):
    chunks = [b"x" * 10] * 3
    request, received = _request(chunks, 30 if announced else None)
    with pytest.raises(BodyTooLarge, match="larger than 16 bytes"):
        asyncio.run(read_body(request, limit=16))
    assert len(received) == 3  # drained, so the client reads the 413 instead of a reset


def test_a_body_far_past_the_limit_is_cut_off_at_once():
    limit = 4
    request, received = _request([b"x" * 10] * 3, 10 * DRAIN_FACTOR * limit)
    with pytest.raises(BodyTooLarge, match="Received Content-Length: 160"):
        asyncio.run(read_body(request, limit=limit))
    assert received == []  # not one chunk read
