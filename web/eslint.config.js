import js from "@eslint/js";

const browser = Object.fromEntries(
  ["window", "document", "navigator", "localStorage", "indexedDB", "location", "history", "fetch", "WebSocket", "crypto",
    "performance", "console", "setTimeout", "clearTimeout", "setInterval", "clearInterval", "TextEncoder", "TextDecoder",
    "DecompressionStream", "AbortController", "MediaStream", "RTCPeerConnection", "URL", "URLSearchParams", "Response",
    "globalThis", "HTMLElement", "HTMLVideoElement", "HTMLInputElement", "Event", "alert", "queueMicrotask", "process",
    "structuredClone", "requestAnimationFrame", "Buffer", "BigInt", "prompt", "indexedDB", "IDBDatabase", "IDBObjectStore", "IDBRequest", "self", "caches", "Notification", "PushManager", "CryptoKeyPair"].map((n) => [n, "readonly"]),
);

export default [
  js.configs.recommended,
  {
    files: ["**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: browser },
    rules: {
      "no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      eqeqeq: ["error", "always", { null: "ignore" }],
      "no-var": "error",
      "prefer-const": "error",
    },
  },
  { ignores: ["node_modules/**"] },
];
