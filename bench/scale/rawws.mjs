// A minimal RFC 6455 client on a bare TCP socket, for the storm's 10,000 reconnects: the `ws` library builds an
// http.ClientRequest, an Agent entry, header checks and two streams per connection (1.19 against 0.93 ms of
// generator CPU per handshake here, docs/performance.md "Fourth pass"). Same surface as the part of `ws` the storm
// uses: send(Buffer), terminate(), events "message" (Buffer), "close" (code), "error"; a refused upgrade calls
// onRefused(status, retryAfterS). The node's pings are answered; frames are masked (a client MUST mask).
import net from "node:net";
import crypto from "node:crypto";
import { EventEmitter } from "node:events";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// Random bytes cut from a 64 KiB pool: crypto.randomBytes per call was 11 % of the generator's busy CPU in a storm
// (two calls per handshake: the WebSocket key and the hello nonce). Each slice is handed out once.
let pool = Buffer.alloc(0), poolAt = 0;
export function randomSlice(n) {
  if (poolAt + n > pool.length) { pool = crypto.randomBytes(65536); poolAt = 0; }
  poolAt += n;
  return pool.subarray(poolAt - n, poolAt);
}

export class RawWs extends EventEmitter {
  constructor(url, onRefused) {
    super();
    const u = new URL(url);
    this.key = randomSlice(16).toString("base64");
    this.open = false;
    this.closed = false;
    this.buf = null;
    this.frag = null; // payload pieces of a fragmented message
    this.onRefused = onRefused;
    this.sock = net.connect({ host: u.hostname, port: Number(u.port) || 80 });
    this.sock.setNoDelay(true);
    this.sock.on("connect", () => this.sock.write(
      `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    this.sock.on("data", (d) => this.data(d));
    this.sock.on("error", (e) => this.emit("error", e));
    this.sock.on("close", () => this.gone(1006));
  }

  data(d) {
    this.buf = this.buf ? Buffer.concat([this.buf, d]) : d;
    if (!this.open) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = this.buf.subarray(0, end).toString("latin1");
      this.buf = this.buf.subarray(end + 4);
      const status = Number(head.slice(9, 12));
      const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head);
      const want = crypto.createHash("sha1").update(this.key + GUID).digest("base64");
      if (status !== 101 || !accept || accept[1] !== want) {
        const retry = /\r\nretry-after:\s*(\d+)/i.exec(head);
        this.onRefused(status, retry ? Number(retry[1]) : 0);
        this.terminate();
        return;
      }
      this.open = true;
    }
    let b = this.buf;
    while (b.length >= 2) {
      const op = b[0] & 0x0f, fin = b[0] & 0x80;
      let len = b[1] & 0x7f, at = 2;
      if (len === 126) { if (b.length < 4) break; len = b.readUInt16BE(2); at = 4; }
      else if (len === 127) { if (b.length < 10) break; len = Number(b.readBigUInt64BE(2)); at = 10; }
      if (b.length < at + len) break;
      const payload = b.subarray(at, at + len);
      b = b.subarray(at + len);
      if (op === 9) this.frame(10, payload);
      else if (op === 8) { this.gone(len >= 2 ? payload.readUInt16BE(0) : 1005); this.terminate(); return; }
      else if (op === 1 || op === 2 || op === 0) {
        if (!fin) { (this.frag ??= []).push(payload); continue; }
        const msg = this.frag ? Buffer.concat([...this.frag, payload]) : payload;
        this.frag = null;
        this.emit("message", msg);
        if (this.closed) return;
      }
    }
    this.buf = b.length ? b : null;
  }

  frame(op, payload) {
    if (this.closed) return;
    const n = payload.length;
    const head = n < 126 ? 6 : n < 65536 ? 8 : 14;
    const out = Buffer.allocUnsafe(head + n);
    out[0] = 0x80 | op;
    if (n < 126) out[1] = 0x80 | n;
    else if (n < 65536) { out[1] = 0x80 | 126; out.writeUInt16BE(n, 2); }
    else { out[1] = 0x80 | 127; out.writeBigUInt64BE(BigInt(n), 2); }
    const m = (Math.random() * 0x100000000) >>> 0;
    out.writeUInt32BE(m, head - 4);
    const mask = out.subarray(head - 4, head);
    for (let i = 0; i < n; i++) out[head + i] = payload[i] ^ mask[i & 3];
    this.sock.write(out);
  }

  send(data) { this.frame(2, data); }

  terminate() {
    if (!this.sock.destroyed) this.sock.destroy();
    this.gone(1006);
  }

  gone(code) {
    if (this.closed) return;
    this.closed = true;
    this.emit("close", code);
  }
}
