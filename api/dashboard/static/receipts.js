// Signed receipts checked in the browser: RFC 8785 canonical JSON of the payload → SHA-256 → Ed25519 (WebCrypto)
// against the public keys the gateway publishes at /v1/receipts/public-key (core/receipts.py is the signer).
"use strict";

const Receipts = (() => {
  function canonical(v) {
    if (v === null) return "null";
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "number") {
      if (!Number.isFinite(v)) throw new Error("not a finite number");
      return JSON.stringify(v); // ECMAScript Number::toString: what RFC 8785 prescribes
    }
    if (typeof v === "string") return JSON.stringify(v);
    if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
    if (typeof v === "object") {
      const keys = Object.keys(v).sort(); // UTF-16 code unit order, as RFC 8785
      return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
    }
    throw new Error("unsupported value in a payload: " + typeof v);
  }

  function b64(s) {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function hex(buf) {
    return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // {valid, reason}: never throws for a bad record; `keys` is the `keys` list of /v1/receipts/public-key
  async function verify(record, keys) {
    if (!globalThis.crypto || !crypto.subtle) {
      return { valid: false, reason: "this page is not a secure context (HTTPS or localhost): no WebCrypto" };
    }
    if (!record || typeof record !== "object" || typeof record.payload !== "object" || record.payload === null) {
      return { valid: false, reason: "not a signed record: no payload" };
    }
    if (record.algorithm && record.algorithm !== "ed25519") {
      return { valid: false, reason: "unknown algorithm " + record.algorithm };
    }
    let bytes;
    try {
      bytes = new TextEncoder().encode(canonical(record.payload));
    } catch (e) {
      return { valid: false, reason: "payload cannot be canonicalised: " + e.message };
    }
    const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
    if (digest !== record.sha256) {
      return { valid: false, reason: "the payload does not match its SHA-256 (it was changed after signing)" };
    }
    const key = (keys || []).find((k) => k.key_version === record.key_version);
    if (!key) return { valid: false, reason: "signed by an unknown key version " + record.key_version };
    try {
      const pub = await crypto.subtle.importKey("raw", b64(key.public_key), { name: "Ed25519" }, false, ["verify"]);
      const ok = await crypto.subtle.verify({ name: "Ed25519" }, pub, b64(record.signature), bytes);
      return ok
        ? { valid: true, reason: "signature verified with key " + key.key_version }
        : { valid: false, reason: "the Ed25519 signature does not verify" };
    } catch (e) {
      return { valid: false, reason: "cannot verify: " + (e.message || e.name) };
    }
  }

  return { canonical, verify };
})();
