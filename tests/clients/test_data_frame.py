"""The server's own data-frame builder produces exactly what a WebSocket client decodes (wsproto as the client)."""

from __future__ import annotations

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.frame_protocol import FrameProtocol

from node.protocol.wire.wsframe import data_frame

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70_000, 200_000]


def decode_as_client(frame: bytes) -> list[object]:
    conn = Connection(ConnectionType.CLIENT)
    conn.receive_data(frame)
    return list(conn.events())


@pytest.mark.parametrize("size", SIZES)
def test_binary_frames_decode_to_the_same_bytes_in_one_message(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    events = decode_as_client(data_frame(payload))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, BytesMessage) and event.message_finished
    assert bytes(event.data) == payload


@pytest.mark.parametrize("size", SIZES)
def test_text_frames_decode_to_the_same_text(size: int) -> None:
    text = ("é" * size)[:size]  # multi-byte UTF-8: the length field counts bytes, not characters
    events = decode_as_client(data_frame(text))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, TextMessage) and event.message_finished
    assert event.data == text


@pytest.mark.parametrize("size", SIZES)
def test_frames_are_byte_for_byte_what_wsproto_would_send(size: int) -> None:
    payload = b"x" * size
    reference = FrameProtocol(client=False, extensions=[])
    assert data_frame(payload) == reference.send_data(payload, fin=True)
    assert data_frame("y" * size) == FrameProtocol(client=False, extensions=[]).send_data("y" * size, fin=True)
