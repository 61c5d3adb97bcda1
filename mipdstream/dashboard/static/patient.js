// The patient page: observations, doses, posterior median with 50 / 90 % bands, target band,
// forecasts under the current and the recommended regimen, alerts and recommendations; live.
"use strict";

const patientId = decodeURIComponent(window.location.pathname.split("/").pop());
const base = `/patients/${encodeURIComponent(patientId)}`;
const state = { patient: null, readings: [], doses: [], posterior: null, forecast: null, alerts: [], recommendations: [], regimen: null };
const date = s => new Date(s * 1000);

function band(x, low, high, color, name, group) {
  return [
    { x, y: low, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: group },
    { x, y: high, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: color, name, legendgroup: group },
  ];
}

function drawChart() {
  const traces = [], shapes = [];
  const p = state.posterior, f = state.forecast;
  if (p && p.history.length) {
    const h = p.history.filter(s => s.analyte === (state.patient.analytes[0]) || true);
    const x = h.map(s => date(s.epoch_s)), q = i => h.map(s => s.quantiles[i]);
    traces.push(...band(x, q(0), q(4), "rgba(31,111,235,0.12)", "posterior 90 %", "post"));
    traces.push(...band(x, q(1), q(3), "rgba(31,111,235,0.25)", "posterior 50 %", "post"));
    traces.push({ x, y: q(2), mode: "lines", line: { color: "#1f6feb" }, name: "posterior median" });
  }
  if (f) {
    const x = f.epoch_s.map(date);
    const colors = { current: ["rgba(102,114,127,0.15)", "rgba(102,114,127,0.3)", "#66727f"],
                     recommended: ["rgba(46,125,50,0.12)", "rgba(46,125,50,0.25)", "#2e7d32"] };
    for (const fc of f.forecasts) {
      const [c90, c50, line] = colors[fc.label];
      const label = `${fc.label}${fc.regimen ? ": " + fc.regimen.description : ": no further doses"}`;
      traces.push(...band(x, fc.band.p05, fc.band.p95, c90, `${fc.label} 90 %`, fc.label));
      traces.push(...band(x, fc.band.p25, fc.band.p75, c50, `${fc.label} 50 %`, fc.label));
      traces.push({ x, y: fc.band.p50, mode: "lines", line: { color: line, dash: "dash" }, name: label });
    }
    if (f.target) {
      shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: f.target.low, y1: f.target.high,
                    fillcolor: "rgba(46,125,50,0.08)", line: { width: 0 }, layer: "below" });
    }
  }
  traces.push({ x: state.readings.map(r => date(r.measured_at)), y: state.readings.map(r => r.value), mode: "markers",
                marker: { color: "#c62828", size: 8 }, name: "readings" });
  for (const d of state.doses) {
    shapes.push({ type: "line", x0: date(d.given_at), x1: date(d.given_at), yref: "paper", y0: 0, y1: 0.08,
                  line: { color: "#7b1fa2", width: 3 } });
  }
  const unit = (f && f.unit) || (state.patient && state.patient.units[0]) || "";
  Plotly.react("chart", traces, {
    margin: { t: 10, r: 10, b: 40, l: 50 }, shapes, yaxis: { title: { text: unit }, rangemode: "tozero" },
    legend: { orientation: "h", y: -0.15 }, hovermode: "x unified",
  }, { displaylogo: false, responsive: true });
}

function drawTables() {
  document.querySelector("#readings tbody").innerHTML = [...state.readings].reverse().map(r =>
    `<tr class="reading" data-reading="${esc(r.reading_id)}"><td>${esc(when(r.measured_at))}</td><td>${r.value} ${esc(r.unit)}</td><td class="muted">${esc(r.device_id)}</td></tr>`).join("");
  document.querySelector("#doses tbody").innerHTML = [...state.doses].reverse().map(d =>
    `<tr><td>${esc(when(d.given_at))}</td><td>${d.amount_mg} mg ${esc(d.route)}${d.status === "missed" ? " (missed)" : ""}</td><td class="muted">${esc(d.device_id)}</td></tr>`).join("");
  document.querySelector("#alerts tbody").innerHTML = state.alerts.map(a => `<tr data-alert="${esc(a.alert_id)}">
    <td>${esc(when(a.raised_at))}</td><td><span class="badge ${esc(a.severity)}">${esc(a.severity)}</span></td><td>${esc(a.message)}</td>
    <td>${a.status === "open" ? `<button class="action ack" data-id="${esc(a.alert_id)}">Acknowledge</button>` : `<span class="muted">${esc(a.status)} by ${esc(a.acknowledged_by)}</span>`}</td></tr>`).join("");
  const typed = Object.fromEntries([...document.querySelectorAll("input.reason")].map(i => [i.dataset.id, i.value]));
  const focused = document.activeElement && document.activeElement.classList.contains("reason") ? document.activeElement.dataset.id : null;
  document.querySelector("#recommendations tbody").innerHTML = state.recommendations.map(r => `<tr data-recommendation="${esc(r.recommendation_id)}">
    <td>${esc(r.regimen.description)}</td><td>${esc(r.rationale)}</td><td class="rec-status">${esc(r.status)}</td>
    <td>${r.status === "open" ? `<input type="text" class="reason" placeholder="reason" data-id="${esc(r.recommendation_id)}">
      <button class="action accept" data-id="${esc(r.recommendation_id)}">Accept</button>
      <button class="action reject" data-id="${esc(r.recommendation_id)}">Reject</button>`
      : `<span class="muted">${esc(r.decided_by)}: ${esc(r.reason)}</span>`}</td></tr>`).join("");
  for (const input of document.querySelectorAll("input.reason")) {  // a live re-render keeps what is being typed
    if (typed[input.dataset.id]) input.value = typed[input.dataset.id];
    if (input.dataset.id === focused) input.focus();
  }
  const current = state.regimen && state.regimen.current;
  document.getElementById("regimen").textContent = current ? `${current.description} (set by ${current.set_by})` : "none";
  const p = state.posterior;
  if (p) {
    document.querySelector("#parameters tbody").innerHTML = Object.entries(p.parameters).map(([name, q]) =>
      `<tr><th>${esc(name)}</th><td>${q[0].toPrecision(3)} / <b>${q[2].toPrecision(3)}</b> / ${q[4].toPrecision(3)}</td></tr>`).join("");
    document.getElementById("summary").textContent = p.source === "prior" ? "prior (no data assimilated yet)"
      : `posterior at ${when(p.epoch_s)} · ${state.readings.length} readings · last ${ago(state.readings.length ? state.readings.at(-1).measured_at : null)}`;
  }
  bindActions();
}

function bindActions() {
  for (const button of document.querySelectorAll("button.ack")) {
    button.onclick = async () => { await api(`/alerts/${encodeURIComponent(button.dataset.id)}/acknowledge`, { method: "POST" }); loadLists(); };
  }
  for (const button of document.querySelectorAll("button.accept, button.reject")) {
    button.onclick = async () => {
      const input = document.querySelector(`input.reason[data-id="${CSS.escape(button.dataset.id)}"]`);
      const reason = input.value.trim();
      if (!reason) { input.focus(); input.placeholder = "a reason is required"; return; }
      await api(`/recommendations/${encodeURIComponent(button.dataset.id)}/decision`,
                { method: "POST", body: { decision: button.classList.contains("accept") ? "accept" : "reject", reason } });
      await loadLists();
      loadModel();
    };
  }
}

async function loadData() {
  [state.readings, state.doses] = await Promise.all([api(`${base}/readings`), api(`${base}/doses`)]);
}
async function loadModel() {
  [state.posterior, state.forecast] = await Promise.all([api(`${base}/posterior`), api(`${base}/forecast`)]);
  drawChart(); drawTables();
  loadNextSample();
}
async function loadNextSample() {
  const box = document.getElementById("next-sample");
  try {
    const s = await api(`${base}/next-sample`);
    box.textContent = `${when(s.epoch_s)}: expected to remove ${Math.round(s.variance_reduction * 100)} % of the ${s.metric} variance (assuming ${s.regimen})`;
  } catch (error) {
    box.textContent = error.message;
  }
}
async function loadLists() {
  [state.alerts, state.recommendations, state.regimen] = await Promise.all([
    api(`${base}/alerts`), api(`${base}/recommendations`), api(`${base}/regimen`)]);
  drawTables();
}
async function loadAll() {
  state.patient = await api(base);
  document.getElementById("title").textContent = `Patient ${state.patient.patient_id} · ${state.patient.model}`;
  await loadData(); await loadLists(); await loadModel();
}

const refreshModel = debounce(loadModel, 300);
function onEvent(kind, data) {
  if (data.patient_id !== patientId) return;
  if (kind === "reading") {
    if (!state.readings.some(r => r.reading_id === data.reading_id && r.device_id === data.device_id)) {
      state.readings.push({ ...data, received_at: null, bloq: false });
      state.readings.sort((a, b) => a.measured_at - b.measured_at);
    }
    drawTables(); drawChart();
  } else if (kind === "dose") {
    loadData().then(() => { drawTables(); drawChart(); });
  } else if (kind === "posterior") {
    refreshModel();
  } else {
    loadLists(); refreshModel();
  }
}

header().then(loadAll);
live(onEvent, loadAll);
