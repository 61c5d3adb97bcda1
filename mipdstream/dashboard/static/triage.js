// The triage page: the team's patients, highest risk first, refreshed on live events.
"use strict";

let rows = [];

function riskCell(r) {
  if (r.risk == null) return `<span class="muted" title="${esc(r.risk_basis)}">${esc(r.risk_basis)}</span>`;
  const level = r.risk >= 0.5 ? "risk-high" : r.risk >= 0.2 ? "risk-mid" : "risk-low";
  return `<span class="risk ${level}" title="${esc(r.risk_basis)}">${Math.round(r.risk * 100)} %</span>
    <div class="status">${esc(r.risk_basis)}</div>`;
}

function exitCell(r) {
  if (r.predicted_exit_s == null) return '<span class="muted">not within the windows assessed</span>';
  return r.predicted_exit_s <= Date.now() / 1000 ? '<span class="risk-high">now</span>' : esc(when(r.predicted_exit_s));
}

function render() {
  const body = document.querySelector("#triage tbody");
  body.innerHTML = rows.map(r => {
    const alerts = r.open_alerts ? `<span class="badge ${esc(r.worst_severity)}">${r.open_alerts}</span>` : '<span class="muted">0</span>';
    const target = r.target ? `${esc(r.target.quantity)} ${r.target.low}–${r.target.high} ${esc(unitText(r.target.unit))}` : "no target";
    return `<tr class="row-link" data-patient="${esc(r.patient_id)}"><td><a href="/dashboard/patients/${encodeURIComponent(r.patient_id)}">${esc(r.patient_id)}</a></td>
      <td>${esc(r.model)}<div class="status">${target}</div></td><td class="risk-cell">${riskCell(r)}</td><td>${exitCell(r)}</td>
      <td>${alerts}</td><td class="since">${ago(r.last_reading_at)}</td></tr>`;
  }).join("");
  for (const tr of body.querySelectorAll("tr.row-link")) {
    tr.onclick = () => { window.location.href = "/dashboard/patients/" + encodeURIComponent(tr.dataset.patient); };
  }
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function load() { rows = await api("/triage"); render(); }
header().then(load);
live(debounce(load, 1000), load);
setInterval(render, 30000);
