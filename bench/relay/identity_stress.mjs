// Makes N identities with common.mjs's newIdentity under a small heap, keeping some alive, so that garbage
// collections run often in the middle of making them: `node --max-old-space-size=16 --max-semi-space-size=1
// identity_stress.mjs 100000` prints "done 100000". Node.js 20 deadlocked in a storm's load generator when a GC
// ran inside the public key's JWK export (docs/performance.md, "Sixth pass"); tests/bench/test_bench_identity.py.
import { newIdentity } from "./common.mjs";

const n = Number(process.argv[2] || 100000);
const kept = [];
for (let i = 0; i < n; i++) {
  const me = newIdentity();
  kept.push({ me, pad: "x".repeat(100) + i });
  if (kept.length > 10000) kept.splice(0, 5000);
  if (i % 1000 === 0) me.sign(me.id); // the storm signs with its identities too
}
console.log(`done ${n}`);
