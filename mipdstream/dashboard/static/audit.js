// The audit log page: the team's audit entries, newest first.
"use strict";

async function load() {
  const entries = await api("/audit?limit=300");
  document.querySelector("#audit tbody").innerHTML = entries.map(e => `<tr data-action="${esc(e.action)}">
    <td>${esc(when(e.at))}</td><td>${esc(e.actor)} <span class="muted">${esc(e.role)}</span></td><td>${esc(e.action)}</td>
    <td>${esc(e.patient_id ?? "")}</td><td>${esc(e.resource)}${e.detail && e.detail.reason ? ` — “${esc(e.detail.reason)}”` : ""}</td>
    <td class="muted">${esc((e.recommendation_hash ?? "").slice(0, 16))}</td></tr>`).join("");
}
header().then(load);
