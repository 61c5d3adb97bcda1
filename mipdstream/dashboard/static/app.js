// Shared helpers of the dashboard pages: API calls with the session cookie, the live event stream.
"use strict";

const API = "/api/v1";

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: { "Content-Type": "application/json" }, ...options };
  if (init.body && typeof init.body !== "string") init.body = JSON.stringify(init.body);
  const response = await fetch(API + path, init);
  if (response.status === 401) {
    window.location.href = "/dashboard/login?next=" + encodeURIComponent(window.location.pathname);
    throw new Error("not logged in");
  }
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error((body && (body.detail || body.title)) || response.statusText);
  return body;
}

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function ago(epochS) {
  if (epochS == null) return "never";
  const s = Math.max(0, Date.now() / 1000 - epochS);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function when(epochS) {
  return epochS == null ? "" : new Date(epochS * 1000).toLocaleString();
}

// UCUM codes as a clinician reads them.
const UNITS = { "mg*h/L": "mg·h/L", "mg.h/L": "mg·h/L", "10*9/L": "×10⁹/L", "{INR}": "", "1": "", "a": "years" };
function unitText(unit) { return unit in UNITS ? UNITS[unit] : (unit ?? ""); }

async function header() {
  const me = await api("/auth/me");
  document.getElementById("who").textContent = `${me.username} (${me.role}, ${me.team ?? me.vendor ?? ""})`;
  document.getElementById("logout").onclick = async () => {
    await api("/auth/logout", { method: "POST" });
    window.location.href = "/dashboard/login";
  };
  return me;
}

// Subscribe to live updates; the browser's EventSource resumes with Last-Event-ID by itself.
function live(onEvent, onReset) {
  const dot = document.getElementById("live");
  const source = new EventSource(API + "/events");
  source.onopen = () => dot && dot.classList.add("on");
  source.onerror = () => dot && dot.classList.remove("on");
  for (const kind of ["reading", "dose", "posterior", "alert", "recommendation", "regimen"]) {
    source.addEventListener(kind, message => onEvent(kind, JSON.parse(message.data)));
  }
  source.addEventListener("reset", () => onReset && onReset());
  return source;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}
