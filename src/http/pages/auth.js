// The hosted sign-in pages' one script (served at /assets/auth.js: the pages' CSP runs no
// inline script). Each page names itself in <body data-page="…">; every call is JSON to the
// page's own issuer, so the session cookie and the server's cross-site checks apply as for
// any client.
"use strict";
const issuer = location.pathname.replace(/\/v1\/auth\/.*$/, "");
const $ = (id) => document.getElementById(id);
const say = (text) => { $("status").textContent = text; };

async function call(path, body, method) {
  const init = { method: method || (body === undefined ? "GET" : "POST"), headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(`${issuer}/v1/auth/${path}`, init);
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  return { ok: r.ok, status: r.status, json };
}

const failed = (r) => (r.json && r.json.detail) || `failed (${r.status})`;

// A link from a message: the token stays in the page until the button is pressed.
function linkPage() {
  $("form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { token: new URLSearchParams(location.search).get("token") || "" };
    const password = $("password");
    if (password) body.password = password.value;
    const r = await call(location.pathname.replace(/^.*\/v1\/auth\//, ""), body);
    say(r.ok ? "Done." : failed(r));
  });
}

// Passkeys: a signed-in user adds one; a signed-out one signs in with one, naming nobody. The
// server renders who is signed in, the list and the forms (sign out, remove: they carry the
// page's token); after a step the page is loaded again, saying what was done.
function passkeysPage() {
  const done = (what) => location.assign(`${location.pathname}?done=${what}`);
  const add = $("add");
  if (add) add.addEventListener("click", async () => {
    try {
      const begun = await call("passkeys/register/begin", {});
      if (!begun.ok) return say(failed(begun));
      const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(begun.json.options.publicKey);
      const credential = await navigator.credentials.create({ publicKey });
      const finished = await call("passkeys/register/finish", { ceremony: begun.json.ceremony, credential: credential.toJSON() });
      if (!finished.ok) return say(failed(finished));
      done("added");
    } catch (e) {
      say(`Failed: ${e.name}`);
    }
  });
  const signIn = $("signin");
  if (signIn) signIn.addEventListener("click", async () => {
    try {
      const begun = await call("passkeys/login/begin", {});
      if (!begun.ok) return say(failed(begun));
      const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begun.json.options.publicKey);
      const credential = await navigator.credentials.get({ publicKey });
      const finished = await call("passkeys/login/finish", { ceremony: begun.json.ceremony, credential: credential.toJSON() });
      if (!finished.ok) return say(failed(finished));
      done("signed-in");
    } catch (e) {
      say(`Failed: ${e.name}`);
    }
  });
}

// The form-post response: sent to the client at once.
if (document.body.dataset.page === "form-post") $("response").submit();
if (document.body.dataset.page === "link") linkPage();
if (document.body.dataset.page === "passkeys") passkeysPage();
