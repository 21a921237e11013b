// Which body encryption the page uses. Until docs/e2ee.md lands in this branch, bodies pass through unchanged
// (plainBodies); see docs/web.md. This module is the one place that changes when the e2ee format is wired in.

import { plainBodies } from "../lib/call.js";

/** @param {import("../lib/identity.js").Identity} _identity @returns {import("../lib/call.js").BodyCrypto} */
export function bodyCryptoFor(_identity) {
  return plainBodies;
}
