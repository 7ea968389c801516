// pgfork dashboard: live regions, fragments loaded after the page, and the
// DSN's reveal and copy. Everything else is plain HTML forms.
"use strict";

const LIVE_EVERY_MS = 3000;

// Elements marked data-live are fetched again every few seconds and
// swapped in place, unless the viewer is using something inside them.
async function refreshLive() {
  const live = document.querySelectorAll("[data-live][id]");
  if (document.hidden || live.length === 0) return;
  let res;
  try {
    res = await fetch(location.href, { headers: { "X-Pgfork-Live": "1" }, credentials: "same-origin" });
  } catch (_) {
    return;
  }
  if (res.redirected && new URL(res.url).pathname === "/login") {
    location.assign("/login");
    return;
  }
  if (!res.ok) return;
  const fresh = new DOMParser().parseFromString(await res.text(), "text/html");
  for (const el of live) {
    const next = fresh.getElementById(el.id);
    if (!next) continue;
    const busy = el.contains(document.activeElement) || el.querySelector("details[open]");
    if (busy) continue;
    el.replaceWith(document.importNode(next, true));
  }
}

// Elements with data-src are filled from that URL once the page is shown
// (a branch's diff takes a moment to compute); a [data-reload] button in
// them loads it again.
async function loadFragment(el) {
  el.setAttribute("aria-busy", "true");
  try {
    const res = await fetch(el.dataset.src, { headers: { "X-Pgfork-Fragment": "1" }, credentials: "same-origin" });
    el.innerHTML = await res.text();
  } catch (e) {
    el.textContent = "Could not load: " + e;
  }
  el.removeAttribute("aria-busy");
  for (const b of el.querySelectorAll("[data-reload]")) {
    b.addEventListener("click", () => loadFragment(el));
  }
}

// The DSN's password stays hidden until asked for: the reveal form posts
// (with the CSRF token) and the answer replaces the masked text.
async function fetchDsn(form) {
  const res = await fetch(form.action, {
    method: "POST",
    body: new URLSearchParams(new FormData(form)),
    headers: { "X-Pgfork-Fragment": "1" },
    credentials: "same-origin",
  });
  if (!res.ok) throw new Error(await res.text());
  return (await res.text()).trim();
}

function wireDsn() {
  const form = document.getElementById("dsn-form");
  const value = document.getElementById("dsn-value");
  if (!form || !value) return;
  let revealed = null;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      revealed = await fetchDsn(form);
      value.textContent = revealed;
      value.classList.add("revealed");
    } catch (e) {
      value.textContent = "could not read the DSN: " + e.message;
    }
  });
  const copy = document.getElementById("copy-dsn");
  if (copy) {
    copy.addEventListener("click", async () => {
      try {
        const dsn = revealed || (await fetchDsn(form));
        await navigator.clipboard.writeText(dsn);
        copy.textContent = "Copied";
      } catch (_) {
        copy.textContent = "Copy failed: reveal and select it";
      }
      setTimeout(() => (copy.textContent = "Copy"), 2000);
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const el of document.querySelectorAll("[data-src]")) loadFragment(el);
  wireDsn();
  setInterval(refreshLive, LIVE_EVERY_MS);
});
