"""The send side of client sessions and peer links: written at the end of each scheduler batch (trio driver).

On this machine a message relayed at a thousand a second pays mostly for wake-ups, not for work: a bare trio relay
spends ~115 µs of CPU per message where blocking sockets spend ~35 (docs/performance.md). Every scheduler round
a message does not need is latency and CPU saved, so:

- A connection (a client session, a peer link) is an `OutBuffer`. `queue(data)` appends to its buffer and, the
  first time in a scheduler batch, marks it dirty with the `Flusher`.
- The `Flusher` is one per node, a trio instrument: its `before_io_wait` hook runs at the end of every scheduler
  batch, after every task of the batch and before trio polls for I/O, and writes each dirty buffer, joined,
  straight to its socket (`os.write` on the non-blocking fd): one syscall for everything the batch produced on
  that connection, whether client frames or peer-link frames, and no task switch and no extra scheduler round for
  it. On this machine a scheduler round trip costs tens of microseconds per wake-up (docs/performance.md).
- What the kernel does not take at once, and everything on a stream without a plain socket (TLS), goes to a
  writer task spawned for that buffer; it drains the buffer with `send_all` and exits, and direct writes resume.
  The hook runs after trio chose how long to poll, so spawning one also wakes the loop (`run_sync_soon`).
- While the loop has time to spare (busy under `QUIET_SHARE_MAX` of the last seconds, `LoopLoad`), a batch holds
  one message or a few: the first reader of a batch to finish what it read calls `flush_if_quiet()` and writes
  everything dirty at once, before its task returns to trio to wait again and trio runs its loop to the end of the
  batch (16-24 µs a node at 1,000 msg/s, docs/performance.md). The batch's later writes wait for its end as
  before. A busy loop writes only at the ends of its batches: at most one write more per batch, and only while
  there is time for it.
- A write that fails (reset by the peer, or the writer's `send_all` not finishing within the buffer's timeout)
  drops what is queued and calls `_write_failed()`; the connection's reader decides what that means.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import time
from collections.abc import Callable

import trio

from node.protocol.handshakes import LoopLoad

log = logging.getLogger("homing.sockio")


# The writer task hands the stream at most this much at a time and notes the time after each piece (`_wrote_at`):
# a client reading slowly (100 KB/s) took 5 s over one whole queue of half a MiB, and was taken for one that had
# stopped reading (node/net/session.py `ClientSession.deliver`, tests/adversarial/test_client_queues.py).
WRITER_PIECE_BYTES = 65_536

# The share of its time (`LoopLoad`, the last 2 s) under which a loop is quiet enough for `flush_if_quiet` to write
# early. Relaying one pair at 1,000 msg/s the caller's node worked 0-40 % of the time and the callee's 0-30 %
# (bench/relay/hops.py, 2026-12-05): the margin is for hosts twice as slow. Relaying flat out it waits for the CPU,
# which counts as work, and writes once a batch as before (bench/relay/ab.py: no change in CPU per message).
QUIET_SHARE_MAX = 0.8


class Flusher(trio.abc.Instrument):
    """Writes out, at the end of every scheduler batch, each `OutBuffer` that queued bytes in it.

    `await nursery.start(flusher.run)` installs it (and hosts the writer tasks) until cancelled.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.load = LoopLoad()  # how busy the event loop is (node/protocol/handshakes.py uses it for the cap)
        self._clock = clock  # seconds; the I/O waits and turns are real time (a test may drive it)
        self._woke = clock()
        self._early_unasked = False  # nothing in this batch has asked to write early yet
        self.last_turn_s = 0.0  # how long the scheduler's last turn (I/O wait to I/O wait) worked: node/net/slicing.py
        self._dirty: list[OutBuffer] = []
        self._checks: list[Callable[[], bool]] = []  # end-of-batch deadline checks (node/net/timer.py)
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._spawned = False

    def mark(self, buf: OutBuffer) -> None:
        self._dirty.append(buf)

    def defer(self, check: Callable[[], bool]) -> bool:
        """Run `check` at the end of this scheduler batch, before trio polls; it returns whether it moved a timer's
        deadline earlier, and then trio polls without waiting and chooses its timeout again. False when the
        flusher is not running: the caller runs its check itself."""
        if self._token is None:
            return False
        self._checks.append(check)
        return True

    def spawn_writer(self, buf: OutBuffer) -> None:
        if self._nursery is None:  # not running (yet, or any more): nothing can be written
            buf._writing = False
            buf._drop()
            buf._write_failed()
            return
        self._nursery.start_soon(buf._writer)
        self._spawned = True

    def flush(self) -> None:
        """Write every dirty buffer now (what the end of the batch would do). An error in one buffer's write is
        logged, and the others are written all the same: it is never raised into whoever flushed (a reader's task,
        or trio, which removes an instrument that raises), and no buffer is left marked and never written."""
        while self._dirty:
            dirty, self._dirty = self._dirty, []
            for buf in dirty:
                try:
                    buf._flush()
                except Exception:
                    log.exception("event=flush_error")

    def flush_if_quiet(self) -> bool:
        """Write every dirty buffer now if this is the first call in a batch of a quiet loop (the module's
        docstring); True when it wrote."""
        if not self._dirty or not self._early_unasked:
            return False
        self._early_unasked = False
        if self.load.share(self._woke) >= QUIET_SHARE_MAX:  # 0.45 µs, once a batch with something to write
            return False
        self.flush()
        return True

    def after_io_wait(self, timeout: float) -> None:
        self._woke = self._clock()
        self._early_unasked = True

    def before_io_wait(self, timeout: float) -> None:
        if not self._dirty and not self._checks:
            self._turn_ended(self._clock())
            return
        self.flush()  # first: what it sets off (a failed write ending a session) may queue checks
        moved = self._run_checks()  # each guarded: a timer whose check was queued is never left waiting for it
        if (self._spawned or moved) and timeout > 0 and self._token is not None:
            # poll without waiting: a new writer runs now, and trio chooses its timeout for a moved deadline
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(_nothing)
        self._spawned = False
        self._turn_ended(self._clock())

    def _turn_ended(self, now: float) -> None:
        self.last_turn_s = now - self._woke
        self.load.worked(self._woke, now)

    def _run_checks(self) -> bool:
        moved = False
        while self._checks:
            checks, self._checks = self._checks, []
            for check in checks:
                try:
                    moved = check() or moved
                except Exception:
                    log.exception("event=timer_check_error")
        return moved

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            trio.lowlevel.add_instrument(self)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                trio.lowlevel.remove_instrument(self)
                self._nursery = None
                self._token = None  # defer() now says no: timers check at once again
                self.flush()  # the last frames of a shutdown (a writer cannot start any more: those are dropped)
                self._run_checks()


def _nothing() -> None:
    pass


class OutBuffer:
    """The send side of one connection. Subclasses call `queue()`; `_write_failed()` is theirs to override."""

    __slots__ = ("_dirty", "_fd", "_flusher", "_out", "_out_bytes", "_sending", "_stream", "_write_timeout_s",
                 "_writer_done", "_writing", "_wrote_at")

    def __init__(self, stream: trio.abc.Stream, flusher: Flusher, write_timeout_s: float = math.inf) -> None:
        self._stream = stream
        self._flusher = flusher
        self._write_timeout_s = write_timeout_s
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._sending = 0  # bytes the writer task took from `_out` and the socket has not taken yet
        # plain TCP: written straight to the socket while it takes them; TLS: always through the writer task
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._writing = False  # a writer task owns the socket's send side
        self._dirty = False  # marked with the flusher for the end of the current batch
        self._writer_done: trio.Event | None = None
        self._wrote_at = time.monotonic()  # when the socket last took bytes (or the buffer was made)

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet taken by the socket: what is queued, and what a writer task holds.

        The writer takes the whole queue at once and writes it piece by piece; counting only the queue said 0
        while up to a queue's worth was still unwritten, so a link being closed was not reported lost, a graceful
        leave's hand-off looked complete before it was written, and a client's queue bound let a second queue's
        worth in behind the writer's."""
        return self._out_bytes + self._sending

    def queue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        self._mark()

    def _mark(self) -> None:
        if not self._writing and not self._dirty:
            self._dirty = True
            self._flusher.mark(self)

    def flush_now(self) -> None:
        """Write what is queued now instead of at the end of the batch (a connection about to close)."""
        if self._dirty:
            self._flush()

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until a running writer task has written everything."""
        if self._writing:
            self._writer_done = trio.Event()
            with trio.move_on_after(timeout_s):
                await self._writer_done.wait()

    def discard(self) -> None:
        """The connection is ending: forget what is queued, and never write to its fd again (once closed, the fd
        number may already belong to another connection). Call before the stream is closed."""
        self._drop()
        self._fd = -1

    def _write_failed(self) -> None:
        """The connection cannot be written to any more (what was queued is dropped). Override to react."""

    def _drop(self) -> None:
        self._out.clear()
        self._out_bytes = 0

    def _take(self, nbytes: int) -> None:
        """The writer task took everything queued (`nbytes`, joined into one write): it is `_sending` now, and
        what is queued from here on waits for the next batch. Override to move per-message counts along."""
        self._out.clear()
        self._out_bytes = 0
        self._sending = nbytes

    def _kept(self, left: int, total: int) -> None:
        """Of `total` bytes joined for a direct write, the socket took all but `left` (they go to the writer task).
        Override to scale per-message counts."""

    def _sent(self) -> None:
        """What the writer task took is written, or lost with the connection. Override to count it done."""
        self._sending = 0

    def _stage(self) -> None:
        """Just before bytes are joined for a write: a subclass may move what it staged into `_out` (a peer link
        seals the frames staged in this batch into one box). `_out_bytes` already counts what is staged."""

    def _flush(self) -> None:
        self._dirty = False
        if self._writing:
            return
        self._stage()
        if not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        if self._fd >= 0:
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:  # reset by the peer, or closed under us
                self._drop()
                self._write_failed()
                return
            if sent:
                self._wrote_at = time.monotonic()
            if sent == len(data):
                self._drop()
                return
            self._kept(len(data) - sent, len(data))
            data = data[sent:]
        self._out[:] = [data]
        self._out_bytes = len(data)
        self._writing = True
        self._flusher.spawn_writer(self)

    async def _writer(self) -> None:
        """Drain the buffer with `send_all` (joined), then exit; `queue` marks for direct writes again after that."""
        failed = False
        try:
            with trio.fail_after(self._write_timeout_s):
                while True:
                    self._stage()
                    if not self._out:
                        break
                    data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
                    self._take(len(data))
                    view = memoryview(data)
                    for at in range(0, len(data), WRITER_PIECE_BYTES):  # progress is seen per piece, not per queue
                        piece = view[at : at + WRITER_PIECE_BYTES]
                        await self._stream.send_all(piece)
                        self._sending -= len(piece)
                        self._wrote_at = time.monotonic()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            self._drop()
            failed = True
        finally:
            # written, or lost with the connection (`failed`, or the writer was cancelled); between batches nothing
            # runs (no await from the last piece to the next `_take`, which replaces the counts)
            self._sent()
            self._writing = False
            if self._writer_done is not None:
                self._writer_done.set()
        if failed:
            self._write_failed()


ACCEPT_BURST_MAX = 64  # connections accepted per wake-up of a listening socket, at most, before others run
ACCEPT_RETRY_S = 0.1  # after an accept error that is not the client's (out of fds or memory)
# errors that concern only the connection being accepted (the client reset it before we took it, ...): take the next
_IGNORABLE_ACCEPT = frozenset(
    getattr(errno, name)
    for name in ("EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
                 "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT", "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET")
    if hasattr(errno, name)
)  # fmt: skip


async def accept_streams(listener: trio.SocketListener, handle: Callable[[trio.SocketStream], None]) -> None:
    """Accept connections on `listener` until cancelled, calling `handle(stream)` for each; never returns.

    Every connection waiting in the listen queue is taken per wake-up (up to ACCEPT_BURST_MAX), not one:
    `SocketListener.accept` passes through the scheduler once per connection, so a node whose event loop was busy
    took one connection per scheduler batch, about 450 a second on this machine, while a reconnect storm's
    clients waited seconds in the kernel's queue (3,500 deep on each survivor) with half its CPU idle
    (docs/performance.md, "Fifth pass"). The socket is read through a duplicate of its descriptor, so trio's
    listener keeps owning (and closing) the original. An accept error that concerns only that connection (trio's
    own list) is skipped; any other (out of file descriptors or memory) is logged and retried after
    ACCEPT_RETRY_S, and the clients already connected are served meanwhile.
    """
    raw = listener.socket
    with socket.socket(raw.family, raw.type, raw.proto, fileno=os.dup(raw.fileno())) as sock:
        sock.setblocking(False)
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(ACCEPT_BURST_MAX):
                try:
                    conn, _addr = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _IGNORABLE_ACCEPT:
                        continue
                    log.warning("event=accept_error error=%s", exc)
                    await trio.sleep(ACCEPT_RETRY_S)
                    break
                handle(trio.SocketStream(trio.socket.from_stdlib_socket(conn)))
            await trio.lowlevel.checkpoint()  # a full queue refilled by clients still yields to the other tasks


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close a connection at the end of its task, whatever state it is in (also when cancelled).

    A plain socket is closed at once, synchronously (trio's `socket.close()` wakes any task still waiting on the
    fd first): `trio.aclose_forcefully` enters and cancels a cancel scope around `aclose()` and its checkpoint,
    which was 28 % of a node's CPU while 10,000 clients left it at a graceful stop (docs/performance.md). Any
    other stream (TLS) is closed by `aclose_forcefully`."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
    else:
        await trio.aclose_forcefully(stream)


async def read_some(stream: trio.abc.Stream, fd: int, max_bytes: int, *, wait_first: bool) -> bytes:
    """Up to `max_bytes` from `stream`; b"" at EOF or when the connection broke or was closed.

    With a plain socket (`fd` >= 0) it reads the fd itself: one `os.read` per wake-up, and after a short read
    (`wait_first`: the socket was drained) it waits for readability first instead of probing with a read that
    fails with EAGAIN. Parked, it holds three coroutine frames fewer than `SocketStream.receive_some`, which is
    what an idle client costs (docs/performance.md). A checkpoint either way, like `receive_some`.
    """
    if fd < 0:
        try:
            return bytes(await stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""
    try:
        if wait_first:
            await trio.lowlevel.wait_readable(fd)
        else:
            await trio.lowlevel.checkpoint()
        while True:
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
    except (trio.ClosedResourceError, OSError):  # closed under us, or reset by the peer
        return b""
