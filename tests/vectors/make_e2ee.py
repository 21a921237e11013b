"""Generate tests/vectors/e2ee.json: fixed-key test vectors for docs/e2ee.md.

Run from the repository root:  python tests/vectors/make_e2ee.py  (writes the file; `--check` only compares).
tests/unit/test_e2ee_vectors.py checks that the committed file is exactly what this script makes, and opens every
body with the receiving side. Every byte string is lower-case hex. Keys and ephemerals are derived from labels,
so the file is reproducible; they are test keys, never to be used for anything else.

Reading the file (for client authors): `steps` is one story in order. Each step was written by `writer` (which
drew `ephemeral_private` for its Noise `e`, when it has one) and is given, as envelope `envelope` from `from`
for call `call`, to every receiver in `receivers` with the outcome there: "accept" (then `plaintext` is what
it says) or the name of the refusal. `refusals` are bodies that must be refused by `receiver` in the state
reached after step `after`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs
import nacl.bindings as sodium

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.identity import Identity
from node.protocol import e2ee
from node.protocol.e2ee_plaintext import (
    PAD_SIZES_BYTES,
    SDP_PAD_MIN_BYTES,
    Answer,
    Hangup,
    Ice,
    Offer,
    Plaintext,
    Reanswer,
    Reject,
    Reoffer,
    encode_plaintext,
    seal_plaintext,
)
from node.protocol.e2ee_replay import OFFER_MAX_AGE_S, OFFER_MAX_FUTURE_S, OfferReplayCache
from node.protocol.noise import HandshakeState, ed25519_to_x25519_keypair

OUT = Path(__file__).resolve().parent / "e2ee.json"
NOW_S = 1_764_633_600  # 2025-12-02T00:00:00Z: every receiver's wall clock in these vectors

SDP_OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
    "a=fingerprint:sha-256 D1:2C:BE:AD:C4:F6:64:5C:25:16:11:9C:AF:E7:0F:73:79:36:4E:9C:1E:15:54:39:0C:06:8B:ED:96\r\n"
    "a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
)
SDP_ANSWER = SDP_OFFER.replace("actpass", "active").replace("F7gI", "Zk3q")
CANDIDATE = "candidate:842163049 1 udp 1677729535 203.0.113.5 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0"


def _h(b: bytes) -> str:
    return b.hex()


def _label_key(label: str) -> bytes:
    return bytes(sodium.crypto_generichash_blake2b_salt_personal(b"homing e2ee test vector: " + label.encode(), 32))


class Draws:
    """random_bytes for the writers: hands out the ephemeral set by `next`, once."""

    def __init__(self) -> None:
        self.pending: bytes | None = None
        self.used: bytes | None = None

    def next(self, label: str) -> Draws:
        self.pending, self.used = _label_key("ephemeral " + label), None
        return self

    def __call__(self, n: int) -> bytes:
        assert n == 32 and self.pending is not None, "one draw per message"
        self.used, self.pending = self.pending, None
        return self.used


def _plain(msg: Plaintext) -> dict[str, Any]:
    """The plaintext map as JSON (what the msgpack map says)."""
    fields = {f.name: getattr(msg, f.name) for f in attrs.fields(type(msg))}
    return {"k": msg.KIND, **{k: v for k, v in sorted(fields.items()) if v is not None}}


def _identity(label: str) -> tuple[Identity, dict[str, str]]:
    ident = Identity.from_seed(_label_key("identity " + label))
    kp = ed25519_to_x25519_keypair(ident.seed)
    return ident, {
        "seed": _h(ident.seed),
        "id": _h(ident.id),
        "x25519_private": _h(kp.private),
        "x25519_public": _h(kp.public),
    }


class Story:
    """The vectors as one story: steps delivered in order, and refusals checked in the state after a step."""

    def __init__(self) -> None:
        self.caller, self.caller_keys = _identity("caller")
        self.callee, self.callee_keys = _identity("callee")
        self.draws = Draws()
        self.steps: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []

    def step(self, name: str, writer: str, call: bytes, msg: Plaintext, body: bytes, **extra: Any) -> None:
        sender = self.caller if writer == "caller" else self.callee
        entry: dict[str, Any] = {
            "name": name,
            "writer": writer,
            "from": _h(sender.id),
            "to": _h(self.callee.id if writer == "caller" or msg.KIND == "elsewhere" else self.caller.id),
            "call": _h(call),
            "envelope": e2ee.ENVELOPE_KIND[msg.KIND],
            "body_type": body[1],
            "plaintext": _plain(msg),
            "plaintext_msgpack": _h(encode_plaintext(msg)),
            "padded_bytes": len(seal_plaintext(msg)),
            "ephemeral_private": _h(self.draws.used) if self.draws.used else None,
        }
        entry.update({k: (_h(v) if isinstance(v, bytes) else v) for k, v in extra.items()})
        entry["body"] = _h(body)
        self.steps.append(entry)
        self.draws.used = None

    def refuse(self, name: str, *, after: str, receiver: str, sender: bytes, call: bytes, kind: str, body: bytes,
               why: str) -> None:  # fmt: skip
        self.refusals.append(
            {"name": name, "after": after, "receiver": receiver, "from": _h(sender), "call": _h(call),
             "envelope": kind, "body": _h(body), "refusal": why}
        )  # fmt: skip

    def incoming(self, call: bytes, body: bytes) -> e2ee.IncomingCall:
        dev, _ = e2ee.IncomingCall.from_offer(
            identity=self.callee, sender=self.caller.id, call=call, kind="call_offer", body=body, now_s=NOW_S,
            replay=OfferReplayCache(), random_bytes=self.draws,
        )  # fmt: skip
        return dev

    def offer(self, out: e2ee.OutgoingCall, label: str, offer: Offer) -> bytes:
        self.draws.next(label)
        return out.offer(offer)

    # ---- call 1: offer, early ICE, two devices answer, elsewhere notice, transport both ways -------------------
    def call1(self) -> None:
        caller, callee, call = self.caller, self.callee, bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        out = e2ee.OutgoingCall(identity=caller, callee=callee.id, call=call, random_bytes=self.draws)
        offer = Offer(sdp=SDP_OFFER, video=False, ts=NOW_S - 5)
        offer_body = self.offer(out, "call1 offer", offer)
        dev_a, dev_b = self.incoming(call, offer_body), self.incoming(call, offer_body)
        self.step(
            "call1 offer", "caller", call, offer, offer_body, receivers={"callee_a": "accept", "callee_b": "accept"},
            prologue=e2ee.call_prologue(call, caller.id, callee.id), handshake_hash_after=_hash_after_1(
                call, caller, callee, offer_body), offer_digest=e2ee.offer_digest(offer_body),
        )  # fmt: skip
        digest = e2ee.offer_digest(offer_body)
        early = [Ice(cand=CANDIDATE, mid="0", mline=0, ufrag="F7gI"), Ice(cand="", mid="0", mline=0)]
        for seq, ice in enumerate(early):
            self.draws.next(f"call1 early {seq}")
            body = out.early(ice)
            for dev in (dev_a, dev_b):
                dev.open(sender=caller.id, kind="call_ice", body=body)
            self.step(
                f"call1 early ice {seq}", "caller", call, ice, body, receivers={"callee_a": "accept", "callee_b":
                "accept"}, seq=seq, prologue=e2ee.early_prologue(call, caller.id, callee.id, digest, seq),
            )  # fmt: skip
            if seq == 0:
                early0 = body
        sid_a, body_a = self.answer(out, dev_a, "a", call)
        sid_b, _ = self.answer(out, dev_b, "b", call)
        self.draws.next("call1 elsewhere device a")
        body_el = dev_a.elsewhere("answered")
        dev_b.open(sender=callee.id, kind="call_hangup", body=body_el)
        self.step(
            "call1 elsewhere from device a", "callee_a", call, e2ee.Elsewhere(how="answered"), body_el,
            receivers={"callee_b": "accept", "callee_a": "replayed"},
            prologue=e2ee.self_prologue(call, caller.id, callee.id, digest),
        )  # fmt: skip
        sent = self.transport(out, {"a": dev_a, "b": dev_b}, {"a": sid_a, "b": sid_b}, call)
        self.call1_refusals(call, offer_body, early0, body_a, sent)

    def call1_refusals(self, call: bytes, offer_body: bytes, early0: bytes, body_a: bytes, sent: list[bytes]) -> None:
        caller, callee = self.caller, self.callee
        last = self.steps[-1]["name"]
        for name, receiver, sender, kind, body in (
            ("offer replayed", "callee_a", caller.id, "call_offer", offer_body),
            ("early message replayed", "callee_a", caller.id, "call_ice", early0),
            ("transport replayed", "caller", callee.id, "call_ice", sent[2]),
            ("answer replayed", "caller", callee.id, "call_answer", body_a),
            ("transport reordered (seq 2 after seq 3)", "caller", callee.id, "call_ice", sent[5]),
        ):
            self.refuse(name, after=last, receiver=receiver, sender=sender, call=call, kind=kind, body=body,
                        why="replayed")  # fmt: skip
        # the held-back body is genuine: say what it holds, and that its writer wrote it before the last step
        self.refusals[-1]["plaintext"] = _plain(Ice(cand="", mid="0", mline=0))
        self.steps[-1]["written_before"] = ["transport reordered (seq 2 after seq 3)"]
        flipped = bytearray(sent[1])
        flipped[-1] ^= 0x01
        after = self.steps[-6]["name"]  # the caller's first transport body (to device b)
        for name, sender, kind, body in (
            ("transport tampered", caller.id, "call_ice", bytes(flipped)),
            ("transport under the wrong envelope kind", caller.id, "call_hangup", sent[1]),
            ("transport from the wrong id", callee.id, "call_ice", sent[1]),
        ):
            self.refuse(name, after=after, receiver="callee_a", sender=sender, call=call, kind=kind, body=body,
                        why="bad_body")  # fmt: skip

    def answer(self, out: e2ee.OutgoingCall, dev: e2ee.IncomingCall, name: str, call: bytes) -> tuple[bytes, bytes]:
        answer = Answer(sdp=SDP_ANSWER if name == "a" else SDP_ANSWER.replace("Zk3q", "Yb8w"), video=False)
        self.draws.next(f"call1 answer device {name}")
        body = dev.answer(answer)
        sid = out.open(sender=self.callee.id, kind="call_answer", body=body).sid
        assert sid is not None
        self.step(
            f"call1 answer from device {name}", f"callee_{name}", call, answer, body, receivers={"caller": "accept"},
            sid=sid, handshake_hash=out.handshake_hash(sid),
        )  # fmt: skip
        return sid, body

    def transport(self, out: e2ee.OutgoingCall, devices: dict[str, e2ee.IncomingCall], sids: dict[str, bytes],
                  call: bytes) -> list[bytes]:  # fmt: skip
        """Transport bodies; returns every body written, in order (index 5, device a's seq 2, is never delivered)."""
        script: list[tuple[str, str, Plaintext]] = [
            ("caller", "b", Hangup(reason="answered_elsewhere")),
            ("caller", "a", Ice(cand=CANDIDATE.replace("46154", "46155"), mid="0", mline=0)),
            ("a", "caller", Ice(cand=CANDIDATE.replace("203.0.113.5", "198.51.100.7"), mid="0", mline=0)),
            ("a", "caller", Reoffer(sdp=SDP_OFFER.replace("sendrecv", "sendonly"), video=True)),
            ("caller", "a", Reanswer(sdp=SDP_ANSWER.replace("sendrecv", "recvonly"), video=True)),
            ("a", "caller", Ice(cand="", mid="0", mline=0)),  # seq 2: written, held back (reordered)
            ("a", "caller", Hangup(reason="ended")),  # seq 3: delivered first
        ]
        written = []
        for i, (writer, to, msg) in enumerate(script):
            kind = e2ee.ENVELOPE_KIND[msg.KIND]
            if writer == "caller":
                body = out.seal(sids[to], msg)
                devices[to].open(sender=self.caller.id, kind=kind, body=body)
                other = "b" if to == "a" else "a"
                receivers, who = {f"callee_{to}": "accept", f"callee_{other}": "not_for_this_device"}, "caller"
            else:
                body = devices[writer].seal(msg)
                receivers, who = {"caller": "accept"}, f"callee_{writer}"
                if i != 5:
                    out.open(sender=self.callee.id, kind=kind, body=body)
            written.append(body)
            if i != 5:
                seq = int.from_bytes(body[2 + e2ee.SID_BYTES : 2 + e2ee.SID_BYTES + 8], "big")
                self.step(f"call1 transport {who} {msg.KIND} seq {seq}", who, call, msg, body, receivers=receivers,
                          sid=sids[to if writer == "caller" else writer], seq=seq)  # fmt: skip
        return written

    # ---- call 2: offers refused (forged sender, wrong call id, tampered), then a reject ------------------------
    def call2(self) -> None:
        caller, callee, call = self.caller, self.callee, bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabacadaeafb0")
        out = e2ee.OutgoingCall(identity=caller, callee=callee.id, call=call, random_bytes=self.draws)
        offer = Offer(sdp=SDP_OFFER, video=True, ts=NOW_S + 30)
        body = self.offer(out, "call2 offer", offer)
        negated = bytearray(caller.id)
        negated[31] ^= 0x80  # -P: another Ed25519 id with the same X25519 key; only the prologue tells them apart
        tampered = bytearray(body)
        tampered[40] ^= 0x04
        for name, sender, call_id, b in (
            ("offer from the wrong id", callee.id, call, body),
            ("offer from the negated caller id", bytes(negated), call, body),
            ("offer under another call id", caller.id, bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"), body),
            ("offer tampered", caller.id, call, bytes(tampered)),
        ):
            self.refuse(name, after="start", receiver="callee_a", sender=sender, call=call_id, kind="call_offer",
                        body=b, why="bad_body")  # fmt: skip
        dev = self.incoming(call, body)
        self.step("call2 offer", "caller", call, offer, body, receivers={"callee_a": "accept"})
        reject = Reject(reason="busy")
        self.draws.next("call2 reject")
        body_r = dev.answer(reject)
        out.open(sender=callee.id, kind="call_reject", body=body_r)
        self.step("call2 reject", "callee_a", call, reject, body_r, receivers={"caller": "accept"})

    # ---- call 3: a stale offer refused; then the caller cancels before any answer ------------------------------
    def call3(self) -> None:
        caller, callee, call = self.caller, self.callee, bytes.fromhex("c3")
        stale = e2ee.OutgoingCall(identity=caller, callee=callee.id, call=call, random_bytes=self.draws)
        stale_body = self.offer(stale, "call3 stale offer", Offer(sdp=SDP_OFFER, video=False, ts=NOW_S - 301))
        self.refuse("offer too old", after="start", receiver="callee_a", sender=caller.id, call=call,
                    kind="call_offer", body=stale_body, why="expired")  # fmt: skip
        out = e2ee.OutgoingCall(identity=caller, callee=callee.id, call=call, random_bytes=self.draws)
        offer = Offer(sdp=SDP_OFFER, video=False, ts=NOW_S)
        body = self.offer(out, "call3 offer", offer)
        dev = self.incoming(call, body)
        self.step("call3 offer", "caller", call, offer, body, receivers={"callee_a": "accept"})
        cancel = Hangup(reason="cancelled")
        self.draws.next("call3 early hangup")
        body_c = out.early(cancel)
        dev.open(sender=caller.id, kind="call_hangup", body=body_c)
        self.step("call3 early hangup", "caller", call, cancel, body_c, receivers={"callee_a": "accept"}, seq=0)
        odd = HandshakeState(  # an early message padded to 1000 bytes, outside the fixed set: built by hand
            pattern="K", initiator=True, s=ed25519_to_x25519_keypair(caller.seed),
            rs=ed25519_to_x25519_keypair(callee.seed).public,
            prologue=e2ee.early_prologue(call, caller.id, callee.id, e2ee.offer_digest(body), 1),
            random_bytes=self.draws.next("call3 odd padding"),
        )  # fmt: skip
        padded = bytes(sodium.sodium_pad(encode_plaintext(Hangup(reason="ended")), 1000))
        odd_body = bytes([e2ee.VERSION, e2ee.EARLY]) + (1).to_bytes(8, "big") + odd.write_message(padded)
        self.refuse("early message with a padded size outside the set", after="call3 early hangup",
                    receiver="callee_a", sender=caller.id, call=call, kind="call_hangup", body=odd_body,
                    why="bad_body")  # fmt: skip


def _hash_after_1(call: bytes, caller: Identity, callee: Identity, offer_body: bytes) -> bytes:
    """The KK handshake hash after message 1 (for debugging an implementation step by step)."""
    hs = HandshakeState(
        pattern="KK", initiator=False, prologue=e2ee.call_prologue(call, caller.id, callee.id),
        s=ed25519_to_x25519_keypair(callee.seed), rs=ed25519_to_x25519_keypair(caller.seed).public,
        random_bytes=lambda n: bytes(n),
    )  # fmt: skip
    hs.read_message(offer_body[2:])
    return hs.handshake_hash


def build() -> dict[str, Any]:
    story = Story()
    story.call1()
    story.call2()
    story.call3()
    return {
        "about": "homing end-to-end call body vectors (docs/e2ee.md); generated by tests/vectors/make_e2ee.py",
        "version": e2ee.VERSION,
        "protocols": {
            "call": "Noise_KK_25519_ChaChaPoly_BLAKE2b",
            "early_and_self": "Noise_K_25519_ChaChaPoly_BLAKE2b",
        },
        "pad_sizes_bytes": list(PAD_SIZES_BYTES),
        "sdp_pad_min_bytes": SDP_PAD_MIN_BYTES,
        "offer_window_s": {"max_age": OFFER_MAX_AGE_S, "max_future": OFFER_MAX_FUTURE_S},
        "now_s": NOW_S,
        "identities": {"caller": story.caller_keys, "callee": story.callee_keys},
        "devices": {"caller": "caller", "callee_a": "callee", "callee_b": "callee"},
        "steps": story.steps,
        "refusals": story.refusals,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text() == text
        print("tests/vectors/e2ee.json is up to date" if same else "tests/vectors/e2ee.json differs: regenerate it")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
