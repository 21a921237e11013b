// DNS-over-HTTPS TXT (RFC 8484 POST, RFC 8467 padding) and the hm1 TXT format of docs/discovery.md, byte for byte.

import { b64uDecode, b64uEncode, buf, concat, equal, utf8 } from "./bytes.js";
import { decodeBounded, DocumentError } from "./documents.js";

export const DOH_ANSWER_MAX_BYTES = 65535;
export const PAD_BLOCK_BYTES = 128;
export const CHUNK_DATA_MAX_CHARS = 1800;
export const CHUNKS_MAX = 64;
export const PAYLOAD_MAX_BYTES = 45056;
export const DOCUMENT_MAX_BYTES = 256 * 1024 + 256;
const TYPE_TXT = 16;
const TYPE_CNAME = 5;
const TYPE_OPT = 41;
const CNAME_HOPS_MAX = 8;
const NAME_MAX_BYTES = 255; // RFC 1035 §2.3.4, on the wire

/**
 * The wire form of a TXT query for `name`: id 0, RD, EDNS0 (4096) with a padding option that makes the
 * message a multiple of 128 bytes (RFC 8467 block-length padding).
 * @param {string} name
 * @returns {Uint8Array}
 */
export function buildTxtQuery(name) {
  const qname = encodeName(name);
  const header = new Uint8Array([0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
  const question = concat(qname, new Uint8Array([0, TYPE_TXT, 0, 1]));
  const optFixed = 11; // root name, type, class, ttl, rdlen
  const unpadded = header.length + question.length + optFixed + 4; // + padding option header
  const padLen = (PAD_BLOCK_BYTES - (unpadded % PAD_BLOCK_BYTES)) % PAD_BLOCK_BYTES;
  const opt = new Uint8Array(optFixed + 4 + padLen);
  const dv = new DataView(opt.buffer);
  dv.setUint16(1, TYPE_OPT);
  dv.setUint16(3, 1232); // the EDNS payload size dnspython and most stub resolvers send
  dv.setUint16(9, 4 + padLen);
  dv.setUint16(11, 12); // EDNS option PADDING
  dv.setUint16(13, padLen);
  return concat(header, question, opt);
}

/** @param {string} name */
function encodeName(name) {
  const labels = name.replace(/\.$/, "").split(".");
  /** @type {Uint8Array[]} */
  const parts = [];
  for (const l of labels) {
    const b = utf8(l);
    if (b.length === 0 || b.length > 63) throw new RangeError(`bad DNS label in ${name}`);
    parts.push(new Uint8Array([b.length]), b);
  }
  parts.push(new Uint8Array([0]));
  const out = concat(...parts);
  if (out.length > 255) throw new RangeError("DNS name too long");
  return out;
}

/**
 * @param {Uint8Array} msg
 * @param {number} off
 * @returns {[string, number]} the lower-cased name and the offset after it
 */
function readName(msg, off) {
  /** @type {string[]} */
  const labels = [];
  let end = -1;
  let wire = 1; // the root label's byte
  let before = off; // a compression pointer must point before this (as dnspython requires): no loops, no forward jumps
  for (;;) {
    if (off >= msg.length) throw new DocumentError("DNS name runs past the message");
    const len = msg[off];
    if (len === 0) {
      off += 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= msg.length) throw new DocumentError("bad DNS compression pointer");
      const target = ((len & 0x3f) << 8) | msg[off + 1];
      if (target >= before) throw new DocumentError("bad DNS compression pointer");
      if (end < 0) end = off + 2;
      before = target;
      off = target;
      continue;
    }
    if (len > 63 || off + 1 + len > msg.length) throw new DocumentError("bad DNS label");
    wire += 1 + len;
    if (wire > NAME_MAX_BYTES) throw new DocumentError("DNS name longer than 255 bytes");
    labels.push(new TextDecoder().decode(msg.subarray(off + 1, off + 1 + len)).toLowerCase());
    off += 1 + len;
  }
  return [labels.join("."), end < 0 ? off : end];
}

/**
 * The TXT records at `name` in a DNS answer (CNAMEs in the answer followed), each as its list of character-strings.
 * @param {Uint8Array} msg
 * @param {string} name
 * @returns {Uint8Array[][]}
 */
export function parseTxtAnswer(msg, name) {
  if (msg.length < 12 || msg.length > DOH_ANSWER_MAX_BYTES) throw new DocumentError("DNS answer size out of range");
  const dv = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  const rcode = dv.getUint16(2) & 0xf;
  if (rcode !== 0) throw new DocumentError(`DNS answer rcode ${rcode}`);
  const qd = dv.getUint16(4);
  const an = dv.getUint16(6);
  let off = 12;
  for (let i = 0; i < qd; i++) off = readName(msg, off)[1] + 4;
  /** @type {{name: string, type: number, rdata: Uint8Array, rdOff: number}[]} */
  const rrs = [];
  for (let i = 0; i < an; i++) {
    const [owner, o] = readName(msg, off);
    if (o + 10 > msg.length) throw new DocumentError("DNS record runs past the message");
    const type = dv.getUint16(o);
    const rdlen = dv.getUint16(o + 8);
    if (o + 10 + rdlen > msg.length) throw new DocumentError("DNS record data runs past the message");
    rrs.push({ name: owner, type, rdata: msg.subarray(o + 10, o + 10 + rdlen), rdOff: o + 10 });
    off = o + 10 + rdlen;
  }
  let target = name.replace(/\.$/, "").toLowerCase();
  for (let hop = 0; hop < CNAME_HOPS_MAX; hop++) {
    const cname = rrs.find((r) => r.type === TYPE_CNAME && r.name === target);
    if (!cname) break;
    target = readName(msg, cname.rdOff)[0];
  }
  return rrs
    .filter((r) => r.type === TYPE_TXT && r.name === target)
    .map((r) => {
      /** @type {Uint8Array[]} */
      const strings = [];
      let p = 0;
      while (p < r.rdata.length) {
        const len = r.rdata[p];
        if (p + 1 + len > r.rdata.length) throw new DocumentError("TXT character-string runs past its record");
        strings.push(r.rdata.subarray(p + 1, p + 1 + len));
        p += 1 + len;
      }
      return strings;
    });
}

const CHUNK_RE = /^hm1\/(0|[1-9][0-9]{0,2})\/([1-9][0-9]{0,2})\/([A-Za-z0-9_-]{11})\/([A-Za-z0-9_-]+)$/;

/**
 * Reassemble the signed document (not yet verified) from the TXT records at NAME (docs/discovery.md).
 * @param {Uint8Array[][]} records
 * @returns {Promise<unknown>}
 */
export async function decodeTxt(records) {
  let total = 0;
  let tag = "";
  /** @type {Map<number, string>} */
  const pieces = new Map();
  for (const record of records) {
    const joined = concat(...record);
    if (joined.length < 4 || new TextDecoder().decode(joined.subarray(0, 4)) !== "hm1/") continue;
    if (joined.length > CHUNK_DATA_MAX_CHARS + 32) throw new DocumentError("TXT chunk longer than the format allows");
    const m = CHUNK_RE.exec(new TextDecoder().decode(joined));
    if (!m) throw new DocumentError("malformed TXT chunk header (expected hm1/<i>/<n>/<digest>/<data>)");
    const index = Number(m[1]);
    const count = Number(m[2]);
    if (count > CHUNKS_MAX || index >= count) throw new DocumentError(`TXT chunk ${index}/${count} is out of range`);
    if (total && (count !== total || m[3] !== tag)) throw new DocumentError("TXT chunks of different lists are mixed at this name");
    if (pieces.has(index)) throw new DocumentError(`TXT chunk ${index} of ${count} appears twice`);
    total = count;
    tag = m[3];
    pieces.set(index, m[4]);
  }
  if (!total) throw new DocumentError("no homing TXT records (hm1/...) at this name");
  let text = "";
  for (let i = 0; i < total; i++) {
    const p = pieces.get(i);
    if (p === undefined) throw new DocumentError(`TXT chunk ${i} of ${total} missing`);
    text += p;
  }
  if (text.length > Math.floor((PAYLOAD_MAX_BYTES * 4 + 2) / 3)) throw new DocumentError("TXT payload larger than the format allows");
  const payload = b64uDecode(text);
  const dig = new Uint8Array(await crypto.subtle.digest("SHA-256", buf(payload))).subarray(0, 8);
  if (!equal(utf8(b64uEncode(dig)), utf8(tag))) throw new DocumentError("TXT chunks do not match their digest (tampered or mixed records)");
  return decodeBounded(await decodePayload(payload));
}

/**
 * @param {Uint8Array} payload
 * @returns {Promise<Uint8Array>}
 */
export async function decodePayload(payload) {
  if (payload.length < 6 || payload[0] !== 1) throw new DocumentError("TXT payload has an unknown format version");
  const codec = payload[1];
  const length = new DataView(payload.buffer, payload.byteOffset + 2, 4).getUint32(0);
  const end = 6 + length;
  if (end > payload.length) throw new DocumentError("TXT payload is shorter than its length field");
  if (payload.subarray(end).some((b) => b !== 0)) throw new DocumentError("TXT payload padding is not zero");
  const data = payload.subarray(6, end);
  if (codec === 0) return data;
  if (codec !== 1) throw new DocumentError(`TXT payload codec ${codec} unknown`);
  return inflateRawBounded(data, DOCUMENT_MAX_BYTES);
}

/**
 * Raw DEFLATE (RFC 1951), stopping at `maxBytes` of output.
 * @param {Uint8Array} data
 * @param {number} maxBytes
 */
async function inflateRawBounded(data, maxBytes) {
  const ds = new DecompressionStream("deflate-raw");
  const writer = ds.writable.getWriter();
  const reader = ds.readable.getReader();
  const stop = () => void reader.cancel().catch(() => {});
  writer.write(new Uint8Array(buf(data))).catch(stop);
  writer.close().catch(stop);
  /** @type {Uint8Array[]} */
  const chunks = [];
  let n = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.length;
      if (n > maxBytes) {
        reader.cancel().catch(() => {});
        throw new DocumentError("TXT payload inflates beyond the document size limit");
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof DocumentError) throw e;
    throw new DocumentError("TXT payload does not inflate (or is not exactly one DEFLATE stream)");
  }
  return concat(...chunks);
}

/**
 * Ask one DoH resolver for NAME's TXT records and return the (unverified) signed document they carry.
 * @param {string} resolver e.g. https://dns.example/dns-query
 * @param {string} name
 * @param {{signal?: AbortSignal, fetchImpl?: typeof fetch}} [opts]
 */
export async function fetchTxtDocument(resolver, name, opts = {}) {
  const f = opts.fetchImpl ?? globalThis.fetch;
  const resp = await f(resolver, {
    method: "POST",
    headers: { "content-type": "application/dns-message", accept: "application/dns-message" },
    body: buf(buildTxtQuery(name)),
    signal: opts.signal,
    redirect: "error",
    cache: "no-store",
    credentials: "omit",
  });
  if (!resp.ok) throw new DocumentError(`DoH ${resolver} answered HTTP ${resp.status}`);
  const answer = await readBounded(resp, DOH_ANSWER_MAX_BYTES);
  return decodeTxt(parseTxtAnswer(answer, name));
}

/**
 * Read a response body, refusing more than `maxBytes`.
 * @param {Response} resp
 * @param {number} maxBytes
 * @returns {Promise<Uint8Array>}
 */
export async function readBounded(resp, maxBytes) {
  const declared = Number(resp.headers.get("content-length") ?? "0");
  if (declared > maxBytes) throw new DocumentError(`answer of ${declared} bytes is over ${maxBytes}`);
  if (!resp.body) return new Uint8Array(await resp.arrayBuffer());
  const reader = resp.body.getReader();
  /** @type {Uint8Array[]} */
  const chunks = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > maxBytes) {
      reader.cancel().catch(() => {});
      throw new DocumentError(`answer over ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return concat(...chunks);
}
