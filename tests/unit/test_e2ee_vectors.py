"""tests/vectors/e2ee.json, the fixed-key vectors of docs/e2ee.md: the committed file is what its generator makes,
every body is reproduced byte for byte by its writer and opened (or refused) by its receivers, and the Noise parts
are confirmed by the independent `noiseprotocol` implementation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from noise.connection import Keypair as TheirKeypair
from noise.connection import NoiseConnection

from node.identity import Identity
from node.protocol import e2ee
from node.protocol.e2ee_plaintext import KINDS, Plaintext, encode_plaintext, seal_plaintext
from node.protocol.noise import ed25519_to_x25519_keypair

pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"
VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "e2ee.json").read_text())
REFUSALS = {
    "bad_body": e2ee.E2eeError,
    "replayed": e2ee.Replayed,
    "expired": e2ee.Expired,
    "not_for_this_device": e2ee.NotForThisDevice,
}


def test_committed_vectors_are_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location("make_e2ee", VECTORS_DIR / "make_e2ee.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (VECTORS_DIR / "e2ee.json").read_text(), "run python tests/vectors/make_e2ee.py"


def plaintext_from_json(obj: dict[str, Any]) -> Plaintext:
    fields = {k: v for k, v in obj.items() if k != "k"}
    return KINDS[obj["k"]](**fields)


def plaintext_to_json(msg: Plaintext) -> dict[str, Any]:
    fields = {f.name: getattr(msg, f.name) for f in attrs.fields(type(msg))}
    return {"k": msg.KIND, **{k: v for k, v in fields.items() if v is not None}}


class Feed:
    """random_bytes handing out the ephemeral a step says its writer drew."""

    def __init__(self) -> None:
        self.value: bytes | None = None

    def __call__(self, n: int) -> bytes:
        assert n == 32 and self.value is not None, "the writer drew an ephemeral the vector does not list"
        value, self.value = self.value, None
        return value


class World:
    """The caller and the two devices of the callee, rebuilt from nothing but the JSON."""

    def __init__(self) -> None:
        ids = VECTORS["identities"]
        self.caller = Identity.from_seed(bytes.fromhex(ids["caller"]["seed"]))
        self.callee = Identity.from_seed(bytes.fromhex(ids["callee"]["seed"]))
        self.feed = Feed()
        self.outgoing: dict[bytes, e2ee.OutgoingCall] = {}
        self.incoming: dict[tuple[str, bytes], e2ee.IncomingCall] = {}
        self.caches = {"callee_a": e2ee.OfferReplayCache(), "callee_b": e2ee.OfferReplayCache()}
        self.refusals_by_name = {r["name"]: r for r in VECTORS["refusals"]}

    def write(self, step: dict[str, Any]) -> bytes:
        call, msg = bytes.fromhex(step["call"]), plaintext_from_json(step["plaintext"])
        if step["ephemeral_private"]:
            self.feed.value = bytes.fromhex(step["ephemeral_private"])
        if step["writer"] == "caller":
            if step["body_type"] == e2ee.OFFER:
                out = e2ee.OutgoingCall(identity=self.caller, callee=self.callee.id, call=call, random_bytes=self.feed)
                self.outgoing[call] = out
                return out.offer(msg)  # type: ignore[arg-type]
            if step["body_type"] == e2ee.EARLY:
                return self.outgoing[call].early(msg)  # type: ignore[arg-type]
            return self.outgoing[call].seal(bytes.fromhex(step["sid"]), msg)
        dev = self.incoming[(step["writer"], call)]
        if step["body_type"] == e2ee.ANSWER:
            return dev.answer(msg)  # type: ignore[arg-type]
        if step["body_type"] == e2ee.SELF:
            return dev.elsewhere(msg.how)  # type: ignore[union-attr]
        for name in step.get("written_before", []):
            held = self.refusals_by_name[name]
            assert dev.seal(plaintext_from_json(held["plaintext"])).hex() == held["body"]
        return dev.seal(msg)

    def receive(self, device: str, sender: bytes, call: bytes, kind: str, body: bytes) -> e2ee.Opened:
        if device == "caller":
            return self.outgoing[call].open(sender=sender, kind=kind, body=body)
        if e2ee.body_type(body) == e2ee.OFFER:
            dev, offer = e2ee.IncomingCall.from_offer(
                identity=self.callee, sender=sender, call=call, kind=kind, body=body, now_s=VECTORS["now_s"],
                replay=self.caches[device], random_bytes=self.feed,
            )  # fmt: skip
            self.incoming[(device, call)] = dev
            return e2ee.Opened(sid=None, msg=offer)
        return self.incoming[(device, call)].open(sender=sender, kind=kind, body=body)

    def refusals_after(self, name: str) -> None:
        for r in VECTORS["refusals"]:
            if r["after"] == name:
                with pytest.raises(REFUSALS[r["refusal"]]) as info:
                    self.receive(r["receiver"], bytes.fromhex(r["from"]), bytes.fromhex(r["call"]), r["envelope"],
                                 bytes.fromhex(r["body"]))  # fmt: skip
                if r["refusal"] == "bad_body":
                    assert not isinstance(info.value, e2ee.NotForThisDevice), r["name"]


def test_vectors_replay_byte_for_byte() -> None:
    world = World()
    world.refusals_after("start")
    for step in VECTORS["steps"]:
        body = bytes.fromhex(step["body"])
        msg = plaintext_from_json(step["plaintext"])
        assert encode_plaintext(msg).hex() == step["plaintext_msgpack"], step["name"]
        assert len(seal_plaintext(msg)) == step["padded_bytes"] in VECTORS["pad_sizes_bytes"]
        assert world.write(step) == body, step["name"]
        for device, outcome in step["receivers"].items():
            args = (device, bytes.fromhex(step["from"]), bytes.fromhex(step["call"]), step["envelope"], body)
            if outcome == "accept":
                opened = world.receive(*args)
                assert plaintext_to_json(opened.msg) == step["plaintext"], (step["name"], device)
                if "sid" in step and step["body_type"] in (e2ee.ANSWER, e2ee.TRANSPORT):
                    assert opened.sid == bytes.fromhex(step["sid"])
            else:
                with pytest.raises(REFUSALS[outcome]):
                    world.receive(*args)
        world.refusals_after(step["name"])
    used = {r["after"] for r in VECTORS["refusals"]}
    assert used <= {"start"} | {s["name"] for s in VECTORS["steps"]}


def test_vectors_cover_every_body_type_kind_and_refusal() -> None:
    assert {s["body_type"] for s in VECTORS["steps"]} == {
        e2ee.OFFER,
        e2ee.ANSWER,
        e2ee.EARLY,
        e2ee.TRANSPORT,
        e2ee.SELF,
    }
    assert {s["plaintext"]["k"] for s in VECTORS["steps"]} == set(KINDS)
    assert {r["refusal"] for r in VECTORS["refusals"]} == {"bad_body", "replayed", "expired"}


def _their_kk(step: dict[str, Any], initiator: bool) -> NoiseConnection:
    ids = VECTORS["identities"]
    conn = NoiseConnection.from_name(b"Noise_KK_25519_ChaChaPoly_BLAKE2b")
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_prologue(bytes.fromhex(step["prologue"]))
    me, peer = ("caller", "callee") if initiator else ("callee", "caller")
    conn.set_keypair_from_private_bytes(TheirKeypair.STATIC, bytes.fromhex(ids[me]["x25519_private"]))
    conn.set_keypair_from_public_bytes(TheirKeypair.REMOTE_STATIC, bytes.fromhex(ids[peer]["x25519_public"]))
    if initiator:
        conn.set_keypair_from_private_bytes(TheirKeypair.EPHEMERAL, bytes.fromhex(step["ephemeral_private"]))
    conn.start_handshake()
    return conn


def test_offer_and_answer_are_plain_noise_kk_for_an_independent_implementation() -> None:
    steps = {s["name"]: s for s in VECTORS["steps"]}
    offer, answer = steps["call1 offer"], steps["call1 answer from device a"]
    caller = _their_kk(offer, initiator=True)
    padded = seal_plaintext(plaintext_from_json(offer["plaintext"]))
    assert bytes([1, e2ee.OFFER]) + bytes(caller.write_message(padded)) == bytes.fromhex(offer["body"])
    payload = bytes(caller.read_message(bytes.fromhex(answer["body"])[2:]))
    assert payload == seal_plaintext(plaintext_from_json(answer["plaintext"]))
    assert bytes(caller.get_handshake_hash()) == bytes.fromhex(answer["handshake_hash"])
    callee = _their_kk(offer, initiator=False)
    assert bytes(callee.read_message(bytes.fromhex(offer["body"])[2:])) == padded


@pytest.mark.parametrize("name", ["call1 early ice 0", "call1 elsewhere from device a"])
def test_early_and_self_bodies_are_plain_noise_k(name: str) -> None:
    step = {s["name"]: s for s in VECTORS["steps"]}[name]
    ids = VECTORS["identities"]
    conn = NoiseConnection.from_name(b"Noise_K_25519_ChaChaPoly_BLAKE2b")
    conn.set_as_responder()
    conn.set_prologue(bytes.fromhex(step["prologue"]))
    conn.set_keypair_from_private_bytes(TheirKeypair.STATIC, bytes.fromhex(ids["callee"]["x25519_private"]))
    sender = "caller" if step["writer"] == "caller" else "callee"
    conn.set_keypair_from_public_bytes(TheirKeypair.REMOTE_STATIC, bytes.fromhex(ids[sender]["x25519_public"]))
    conn.start_handshake()
    body = bytes.fromhex(step["body"])
    message = body[10:] if step["body_type"] == e2ee.EARLY else body[2:]
    assert bytes(conn.read_message(message)) == seal_plaintext(plaintext_from_json(step["plaintext"]))


def test_identity_keys_in_the_vectors_are_libsodium_conversions() -> None:
    for who in ("caller", "callee"):
        keys = VECTORS["identities"][who]
        ident = Identity.from_seed(bytes.fromhex(keys["seed"]))
        assert ident.id.hex() == keys["id"]
        kp = ed25519_to_x25519_keypair(ident.seed)
        assert (kp.private.hex(), kp.public.hex()) == (keys["x25519_private"], keys["x25519_public"])


def test_docs_state_the_constants_of_the_code() -> None:
    """docs/e2ee.md must stay true: the numbers a client author copies from it are the code's."""
    from node.protocol import e2ee_plaintext, e2ee_replay

    doc = (Path(__file__).resolve().parents[2] / "docs" / "e2ee.md").read_text()
    sizes = ", ".join(str(n) for n in e2ee_plaintext.PAD_SIZES_BYTES)
    assert f"**{sizes}**" in doc
    assert f"at least **{e2ee_plaintext.SDP_PAD_MIN_BYTES}**" in doc
    window = f"[now - {e2ee_replay.OFFER_MAX_AGE_S} s, now + {e2ee_replay.OFFER_MAX_FUTURE_S} s]"
    assert window in doc
    for label in (e2ee.CALL_PROLOGUE, e2ee.EARLY_PROLOGUE, e2ee.SELF_PROLOGUE):
        assert f'"{label.decode()}' in doc
    assert f"1..{e2ee_plaintext.SDP_MAX_BYTES} UTF-8 bytes" in doc
    assert f"str ≤ {e2ee_plaintext.CANDIDATE_MAX_BYTES} bytes" in doc
    largest = e2ee_plaintext.PAD_SIZES_BYTES[-1] + 58
    assert f"the largest is {largest:,}" in doc and largest <= e2ee.BODY_MAX_BYTES
