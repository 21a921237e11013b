// The call page's service worker: push wake-ups (docs/web.md, "Push wake-ups"). A node's push carries exactly
// `{"t":"wake","v":1}` (docs/client-protocol.md, "Push wake-up"): no caller, no call. We show "incoming call"; a click
// opens or focuses the page, which connects to its node and gets the queued offer from the mailbox. Open pages are
// also told at once (`{t: "wake"}`), so one waiting for its next reconnect attempt connects now.

const sw = /** @type {any} */ (self);
const CACHE = "homing-sw";
const PAGE_URL_MAX = 4096;

/** Where the page's own URL (with its #settings) is kept, so a click opens the page as the user set it up. */
function pageKey() {
  return new URL("__homing_page_url", sw.registration.scope).href;
}

/** @param {string} url */
async function savePage(url) {
  const cache = await caches.open(CACHE);
  await cache.put(pageKey(), new Response(url));
}

async function pageUrl() {
  const cache = await caches.open(CACHE);
  const hit = await cache.match(pageKey());
  const url = hit ? await hit.text() : "";
  return url.startsWith(sw.registration.scope) ? url : sw.registration.scope;
}

/** @param {any} ev */
async function onPush(ev) {
  let wake = false;
  try {
    const m = ev.data ? ev.data.json() : null;
    wake = m?.t === "wake" && m?.v === 1;
  } catch {
    wake = false;
  }
  const windows = await sw.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const w of windows) w.postMessage({ t: "wake" });
  // userVisibleOnly: every push shows a notification (browsers cancel subscriptions that push silently)
  await sw.registration.showNotification("incoming call", {
    body: wake ? "Someone is calling you on homing: open to answer" : "homing",
    tag: "homing-wake",
    renotify: true,
    requireInteraction: true,
  });
}

async function openPage() {
  const windows = await sw.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((/** @type {any} */ w) => w.url.startsWith(sw.registration.scope));
  if (open) {
    open.postMessage({ t: "wake" });
    return open.focus();
  }
  return sw.clients.openWindow(await pageUrl());
}

sw.addEventListener("install", () => sw.skipWaiting());
sw.addEventListener("activate", (/** @type {any} */ ev) => ev.waitUntil(sw.clients.claim()));
sw.addEventListener("push", (/** @type {any} */ ev) => ev.waitUntil(onPush(ev)));
sw.addEventListener("notificationclick", (/** @type {any} */ ev) => {
  ev.notification.close();
  ev.waitUntil(openPage());
});
sw.addEventListener("message", (/** @type {any} */ ev) => {
  const d = ev.data;
  if (d?.t === "page" && typeof d.url === "string" && d.url.length <= PAGE_URL_MAX && d.url.startsWith(sw.registration.scope)) ev.waitUntil(savePage(d.url));
});
