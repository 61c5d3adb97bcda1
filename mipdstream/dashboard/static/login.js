// The login form: a session cookie from POST /auth/token, then back to the page asked for.
"use strict";

document.getElementById("login").addEventListener("submit", async event => {
  event.preventDefault();
  const response = await fetch(API + "/auth/token", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: document.getElementById("username").value, password: document.getElementById("password").value }),
  });
  if (!response.ok) {
    document.getElementById("error").textContent = response.status === 429 ? "Too many failed attempts: wait a few minutes" : "Unknown user or wrong password";
    return;
  }
  const next = new URLSearchParams(window.location.search).get("next");
  window.location.href = next && next.startsWith("/dashboard/") ? next : "/dashboard/";
});
