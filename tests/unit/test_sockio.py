"""node/net/sockio.py: the end-of-batch flusher and the per-connection output buffer, on real sockets."""

from __future__ import annotations

import socket

import trio
import trio.testing

from node.net.sockio import QUIET_SHARE_MAX, Flusher, OutBuffer


class Recording(OutBuffer):
    __slots__ = ("failures",)

    def __init__(self, stream: trio.abc.Stream, flusher: Flusher, write_timeout_s: float = float("inf")) -> None:
        super().__init__(stream, flusher, write_timeout_s)
        self.failures = 0

    def _write_failed(self) -> None:
        self.failures += 1


async def tcp_pair() -> tuple[trio.SocketStream, socket.socket]:
    """A trio stream and the plain socket at its other end, over loopback TCP."""
    listener = socket.create_server(("127.0.0.1", 0))
    ours = await trio.open_tcp_stream("127.0.0.1", listener.getsockname()[1])
    theirs, _ = listener.accept()  # already connected: the accept does not wait
    listener.close()
    return ours, theirs


def available(sock: socket.socket) -> bytes:
    """What the peer has received so far, without waiting."""
    sock.setblocking(False)
    out = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


async def test_frames_queued_in_one_batch_are_written_together_at_its_end() -> None:
    flusher = Flusher()
    stream, peer = await tcp_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(stream, flusher)
        buf.queue(b"one,")
        buf.queue(b"two,")
        buf.queue(b"three")
        assert buf.pending_bytes == len(b"one,two,three")
        assert available(peer) == b""  # nothing is written while the batch runs
        with trio.fail_after(5):
            while buf.pending_bytes:
                await trio.sleep(0)  # the batch ends; the flusher writes
            got = b""
            while len(got) < 13:
                got += available(peer)
                await trio.sleep(0.001)
        assert got == b"one,two,three"
        assert not buf._writing  # the kernel took it all: no writer task was needed
        nursery.cancel_scope.cancel()
    peer.close()


async def test_what_the_kernel_does_not_take_goes_to_a_writer_task_in_order() -> None:
    flusher = Flusher()
    stream, peer = await tcp_pair()
    payload = bytes(range(256)) * 64 * 1024  # 16 MiB: far more than the kernel takes at once
    got = bytearray()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(stream, flusher)
        buf.queue(payload[: len(payload) // 2])
        buf.queue(payload[len(payload) // 2 :])
        with trio.fail_after(20):
            while not buf._writing:
                await trio.sleep(0)
            # a writer task owns the rest; frames queued meanwhile follow it, in order
            buf.queue(b"tail")
            while len(got) < len(payload) + 4:
                got += available(peer)
                await trio.sleep(0.001)
            while buf._writing:
                await trio.sleep(0)
        assert bytes(got) == payload + b"tail"
        assert buf.pending_bytes == 0 and buf.failures == 0
        # direct writes resume after the writer has drained the buffer
        buf.queue(b"again")
        with trio.fail_after(5):
            while b"again" not in got:
                got += available(peer)
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    peer.close()


async def test_what_a_writer_task_holds_is_pending_until_the_socket_takes_it() -> None:
    """The writer takes the whole queue at once and writes it piece by piece: until the socket has taken the last
    piece, those bytes are still pending. A link closed meanwhile has lost them, a graceful leave must wait for
    them, and a client's queue bound must count them (it said 0 here, and let a second queue's worth in)."""
    flusher = Flusher()
    stream, peer = await tcp_pair()
    # small kernel buffers (doubled by Linux: 128 KiB each), still over loopback's MSS: smaller ones stall TCP
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB: far more than the two kernel buffers hold
    got = bytearray()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(stream, flusher)
        buf.queue(payload)
        with trio.fail_after(10):
            while not (buf._writing and not buf._out):  # the writer task has taken the queue
                await trio.sleep(0)
            for _ in range(20):  # the writer blocks on the full socket: its bytes stay pending
                await trio.sleep(0.001)
            got += available(peer)  # what the two small kernel buffers held: far from all of it
            assert buf.pending_bytes >= len(payload) - len(got) - 512 * 1024, (buf.pending_bytes, len(got))
            while len(got) < len(payload):
                got += available(peer)
                assert buf.pending_bytes >= len(payload) - len(got) - 512 * 1024
                await trio.sleep(0.001)
            while buf._writing:
                await trio.sleep(0)
        assert bytes(got) == payload
        assert buf.pending_bytes == 0 and buf.failures == 0
        nursery.cancel_scope.cancel()
    peer.close()


async def test_a_peer_that_never_reads_fails_the_write_after_the_timeout() -> None:
    flusher = Flusher()
    stream, peer = await tcp_pair()
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(stream, flusher, write_timeout_s=0.5)
        buf.queue(bytes(8 * 1024 * 1024))
        with trio.fail_after(10):
            while not buf.failures:
                await trio.sleep(0.01)
        assert buf.failures == 1
        assert buf.pending_bytes == 0  # what was queued is dropped, memory is not held
        assert not buf._writing
        nursery.cancel_scope.cancel()
    peer.close()


async def test_a_reset_connection_fails_the_write_and_drops_the_queue() -> None:
    flusher = Flusher()
    stream, peer = await tcp_pair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()  # linger 0: the peer resets the connection
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(stream, flusher)
        with trio.fail_after(5):
            while not buf.failures:
                buf.queue(b"x" * 1000)
                await trio.sleep(0.01)
        assert buf.pending_bytes == 0
        nursery.cancel_scope.cancel()


async def test_a_stream_without_a_socket_is_written_by_a_writer_task() -> None:
    """TLS streams have no plain fd: every flush goes through `send_all` (here a memory stream stands in)."""
    flusher = Flusher()
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(ours, flusher)
        assert buf._fd == -1
        buf.queue(b"hello ")
        buf.queue(b"world")
        got = b""
        with trio.fail_after(5):
            while len(got) < 11:
                got += await theirs.receive_some(100)
        assert got == b"hello world"
        nursery.cancel_scope.cancel()


async def test_flush_now_writes_before_the_batch_ends() -> None:
    flusher = Flusher()
    stream, peer = await tcp_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(stream, flusher)
        buf.queue(b"bye")
        buf.flush_now()
        assert buf.pending_bytes == 0
        peer.settimeout(5)
        assert peer.recv(10) == b"bye"
        nursery.cancel_scope.cancel()
    peer.close()


async def test_a_flusher_that_is_not_running_fails_writers_instead_of_losing_them_silently() -> None:
    flusher = Flusher()  # never started
    ours, _theirs = trio.testing.memory_stream_pair()
    buf = Recording(ours, flusher)
    buf.queue(b"x")
    flusher.flush()
    assert buf.failures == 1 and buf.pending_bytes == 0


async def test_a_discarded_buffer_never_writes_to_its_old_fd_again() -> None:
    """Once a connection ends its fd number may be reused by another connection: nothing may reach it."""
    flusher = Flusher()
    stream, peer = await tcp_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(stream, flusher)
        buf.queue(b"lost")
        buf.discard()
        assert buf.pending_bytes == 0
        await stream.aclose()
        other, other_peer = await tcp_pair()  # likely gets the same fd number
        buf.queue(b"late")
        with trio.fail_after(5):
            while not buf.failures:
                await trio.sleep(0.01)
        assert available(other_peer) == b""
        assert available(peer) == b""
        await other.aclose()
        nursery.cancel_scope.cancel()
    peer.close()
    other_peer.close()


async def test_a_quiet_loop_writes_a_batchs_first_reader_at_once_and_a_busy_one_at_the_batchs_end() -> None:
    """While the loop is busy under QUIET_SHARE_MAX of its time, a batch holds a message or a few: the first reader
    to call `flush_if_quiet` writes at once, before its task returns to trio (node/net/sockio.py, 16-24 µs a node at
    1,000 msg/s). Once per batch: its later writes, and every write while the loop is busy, wait for the batch's end
    and go out together."""
    now_s = 100.0
    flusher = Flusher(clock=lambda: now_s)  # time stands still: the loop's share of work is what the test records
    stream, peer = await tcp_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        buf = Recording(stream, flusher)
        with trio.fail_after(5):
            await trio.sleep(0)  # a new batch of a loop that has done no work
            buf.queue(b"lone")
            assert flusher.flush_if_quiet()
            assert available(peer) == b"lone"  # on the wire before this task let anything else run
            buf.queue(b"second")
            assert not flusher.flush_if_quiet()  # only the first in a batch
            assert available(peer) == b""
            got = b""
            while got != b"second":
                await trio.sleep(0.001)  # the batch's end writes it
                got += available(peer)

            assert QUIET_SHARE_MAX < 1.0
            flusher.load.worked(now_s - 1.5, now_s)  # busy all the time the window has seen
            await trio.sleep(0)
            buf.queue(b"busy")
            assert not flusher.flush_if_quiet()
            assert available(peer) == b""
            got = b""
            while got != b"busy":
                await trio.sleep(0.001)
                got += available(peer)
        nursery.cancel_scope.cancel()
    peer.close()


class Exploding(Recording):
    """A buffer whose next write raises (what a bug in a subclass's `_stage` or `_write_failed` would do)."""

    __slots__ = ("explode",)

    def __init__(self, stream: trio.abc.Stream, flusher: Flusher) -> None:
        super().__init__(stream, flusher)
        self.explode = True

    def _stage(self) -> None:
        if self.explode:
            self.explode = False
            raise RuntimeError("a bug in one connection's write")


async def test_an_error_in_one_buffers_write_leaves_the_others_of_its_batch_written() -> None:
    """Before, the flusher dropped its whole list of dirty buffers on the first error: the ones after the failing
    one stayed marked dirty, were never marked again, and their connections never wrote another byte."""
    flusher = Flusher()
    bad_stream, bad_peer = await tcp_pair()
    good_stream, good_peer = await tcp_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        bad, good = Exploding(bad_stream, flusher), Recording(good_stream, flusher)
        with trio.fail_after(5):
            bad.queue(b"first")  # marked first: its error comes before the good one is written
            good.queue(b"one,")
            got = b""
            while got != b"one,":
                await trio.sleep(0.001)
                got += available(good_peer)
            good.queue(b"two")  # and it is marked and written again afterwards
            while got != b"one,two":
                await trio.sleep(0.001)
                got += available(good_peer)
            bad.queue(b"second")  # the failing buffer itself writes again once it no longer fails
            got = b""
            while not got.endswith(b"second"):
                await trio.sleep(0.001)
                got += available(bad_peer)
        nursery.cancel_scope.cancel()
    bad_peer.close()
    good_peer.close()
