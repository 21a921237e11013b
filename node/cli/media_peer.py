"""One side of `homing demo --media`: a real WebRTC audio peer (aiortc, asyncio) in a helper process.

Line protocol on stdin/stdout, one JSON object per line (the demo, on trio, carries the SDPs through homing):
    offerer:   -> {"sdp": offer}      <- {"sdp": answer}      -> {"connected": bool, "frames": n, "ice": pair}
    answerer:  <- {"sdp": offer}      -> {"sdp": answer}      -> {"connected": bool, "frames": n, "ice": pair}
Each side sends a 440 Hz tone and counts the audio frames it receives within LISTEN_S after `connected`.
aiortc gathers every candidate before it returns a description, so the SDPs carry them (no trickle here).
Needs the optional dependency aiortc (`pip install 'homing[media]'`).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import sys
from typing import Any

CONNECT_S = 15.0
LISTEN_S = 2.0
RATE = 48000
SAMPLES = 960  # 20 ms


def _tone_track() -> Any:
    from array import array

    from aiortc.mediastreams import AudioStreamTrack
    from av import AudioFrame

    class Tone(AudioStreamTrack):  # type: ignore[misc,untyped-decorator,unused-ignore]
        def __init__(self) -> None:
            super().__init__()
            self._t = 0

        async def recv(self) -> AudioFrame:
            await asyncio.sleep(SAMPLES / RATE)
            wave = (int(8000 * math.sin(2 * math.pi * 440 * i / RATE)) for i in range(self._t, self._t + SAMPLES))
            pcm = array("h", wave)
            frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES)
            frame.planes[0].update(pcm.tobytes())
            frame.sample_rate, frame.pts, frame.time_base = RATE, self._t, fractions.Fraction(1, RATE)
            self._t += SAMPLES
            return frame

    return Tone()


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _read() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    obj: dict[str, Any] = json.loads(line)
    return obj


async def main(role: str) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection()
    connected = asyncio.Event()
    frames = [0]
    tasks: set[asyncio.Future[None]] = set()

    @pc.on("connectionstatechange")  # type: ignore[misc,untyped-decorator,unused-ignore]
    async def _state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    @pc.on("track")  # type: ignore[misc,untyped-decorator,unused-ignore]
    def _track(track: Any) -> None:
        async def count() -> None:
            from aiortc.mediastreams import MediaStreamError

            try:
                while True:
                    await track.recv()
                    frames[0] += 1
            except MediaStreamError:
                return  # the peer connection closed

        tasks.add(asyncio.ensure_future(count()))

    pc.addTrack(_tone_track())
    if role == "offer":
        await pc.setLocalDescription(await pc.createOffer())
        _say({"sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=(await _read())["sdp"], type="answer"))
    else:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=(await _read())["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        _say({"sdp": pc.localDescription.sdp})
    try:
        await asyncio.wait_for(connected.wait(), CONNECT_S)
    except TimeoutError:
        _say({"connected": False, "frames": 0, "ice": ""})
        await pc.close()
        return
    await asyncio.sleep(LISTEN_S)
    _say({"connected": True, "frames": frames[0], "ice": _pair(pc)})
    await pc.close()


def _pair(pc: Any) -> str:
    """The selected candidate pair, e.g. "127.0.0.1:5000 -> 127.0.0.1:5001", best effort."""
    try:
        transport = pc.getTransceivers()[0].receiver.transport.transport
        pair = transport._connection._nominated  # aioice internals: only for the narration
        first = next(iter(pair.values()))
        local, remote = first.local_candidate, first.remote_addr
        return f"{local.host}:{local.port} -> {remote[0]}:{remote[1]}"
    except Exception:  # pragma: no cover - narration only
        return ""


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
