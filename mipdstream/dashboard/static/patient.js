// The patient page: what a pharmacist needs to decide. Per analyte a panel with the readings
// (per device), the posterior's 50 / 90 % bands, the target band, doses, the forecast under the
// current and the recommended regimen and the next-sample suggestion; the exposure per day
// against the target; the open recommendation with Accept / Reject; alerts; parameters beside
// their prior. Live over the event stream.
"use strict";

const patientId = decodeURIComponent(window.location.pathname.split("/").pop());
const base = `/patients/${encodeURIComponent(patientId)}`;
const state = {
  patient: null, model: null, readings: [], doses: [], posterior: null, forecasts: {}, exposure: null,
  alerts: [], recommendations: [], regimen: null, nextSample: null,
};
const date = s => new Date(s * 1000);
const COLORS = { current: ["rgba(102,114,127,0.14)", "rgba(102,114,127,0.28)", "#66727f"],
                 recommended: ["rgba(46,125,50,0.12)", "rgba(46,125,50,0.26)", "#2e7d32"] };
const DEVICE_COLORS = ["#c62828", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037"];

function firstDoseS() {
  return state.doses.length ? Math.min(...state.doses.map(d => d.given_at)) : state.patient.origin_s;
}

// Clock time with hours since the first dose under it, every 6, 12 or 24 h.
function timeAxis(startS, endS) {
  const span = Math.max(1, (endS - startS) / 3600);
  const step = span <= 48 ? 6 : span <= 120 ? 12 : 24;
  const zero = firstDoseS();
  const first = zero + Math.ceil((startS - zero) / 3600 / step) * step * 3600;
  const vals = [], text = [];
  for (let t = first; t <= endS; t += step * 3600) {
    const d = date(t);
    vals.push(d);
    text.push(`${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}` +
              `<br>+${Math.round((t - zero) / 3600)} h`);
  }
  return { type: "date", tickvals: vals, ticktext: text, range: [date(startS), date(endS)] };
}

function band(x, low, high, color, name, group) {
  return [
    { x, y: low, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: group },
    { x, y: high, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: color, name, legendgroup: group, hoverinfo: "skip" },
  ];
}

function analyteReadings(analyte) {
  const codes = [analyte.name, ...(analyte.codes || [])];
  return state.readings.filter(r => codes.includes(r.analyte));
}

function chartRange() {
  const times = [firstDoseS(), ...state.readings.map(r => r.measured_at)];
  const f = Object.values(state.forecasts)[0];
  if (f && f.epoch_s.length) times.push(f.epoch_s[f.epoch_s.length - 1]);
  return [Math.min(...times), Math.max(...times, Date.now() / 1000)];
}

function doseShapes() {
  return state.doses.filter(d => d.status !== "missed").map(d => ({
    type: "line", x0: date(d.given_at), x1: date(d.given_at), yref: "paper", y0: 0, y1: 0.06, line: { color: "#7b1fa2", width: 3 } }));
}

function nextSampleShapes() {
  const s = state.nextSample;
  if (!s || !s.available) return [[], []];
  return [[{ type: "line", x0: date(s.epoch_s), x1: date(s.epoch_s), yref: "paper", y0: 0, y1: 1, line: { color: "#1f6feb", dash: "dot", width: 1.5 } }],
          [{ x: date(s.epoch_s), yref: "paper", y: 1, text: "next sample", showarrow: false, yanchor: "bottom", font: { size: 11, color: "#1f6feb" } }]];
}

function drawPanel(analyte, index) {
  const id = `panel-${index}`;
  const traces = [], shapes = doseShapes();
  const history = (state.posterior ? state.posterior.history : []).filter(s => s.analyte_name === analyte.name);
  if (history.length) {
    const x = history.map(s => date(s.epoch_s)), q = i => history.map(s => s.quantiles[i]);
    traces.push(...band(x, q(0), q(4), "rgba(31,111,235,0.12)", "posterior 90 %", "post"));
    traces.push(...band(x, q(1), q(3), "rgba(31,111,235,0.25)", "posterior 50 %", "post"));
    traces.push({ x, y: q(2), mode: "lines", line: { color: "#1f6feb" }, name: "posterior median" });
  }
  const f = state.forecasts[analyte.name];
  if (f) {
    const x = f.epoch_s.map(date);
    for (const fc of f.forecasts) {
      const [c90, c50, line] = COLORS[fc.label];
      const what = fc.regimen ? fc.regimen.description : "no further doses";
      traces.push(...band(x, fc.band.p05, fc.band.p95, c90, `${fc.label} regimen 90 %`, fc.label));
      traces.push(...band(x, fc.band.p25, fc.band.p75, c50, `${fc.label} regimen 50 %`, fc.label));
      traces.push({ x, y: fc.band.p50, mode: "lines", line: { color: line, dash: "dash" }, name: `${fc.label}: ${what}` });
    }
    if (f.level_band) {
      shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: f.level_band.low, y1: f.level_band.high,
                    fillcolor: "rgba(46,125,50,0.10)", line: { width: 0 }, layer: "below" });
    }
  }
  const byDevice = {};
  for (const r of analyteReadings(analyte)) (byDevice[r.device_id] ??= []).push(r);
  Object.entries(byDevice).forEach(([device, rs], k) => {
    traces.push({ x: rs.map(r => date(r.measured_at)), y: rs.map(r => r.value), mode: "markers", name: `readings · ${device}`,
                  marker: { color: DEVICE_COLORS[k % DEVICE_COLORS.length], size: rs.length > 60 ? 4 : 8 } });
  });
  const [sampleShapes, annotations] = nextSampleShapes();
  const [start, end] = chartRange();
  Plotly.react(id, traces, {
    margin: { t: 18, r: 10, b: 60, l: 55 }, shapes: [...shapes, ...sampleShapes], annotations,
    xaxis: timeAxis(start, end), yaxis: { title: { text: unitText(analyte.unit) }, rangemode: "tozero" },
    legend: { orientation: "h", y: -0.25 }, hovermode: "closest",
  }, { displaylogo: false, responsive: true });
}

function ensurePanels() {
  const analytes = state.posterior ? state.posterior.analytes : [];
  const holder = document.getElementById("panels");
  if (holder.childElementCount === analytes.length) return analytes;
  holder.innerHTML = analytes.map((a, i) => `<section class="panel" data-analyte="${esc(a.name)}">
    <h2>${esc(a.name)} <span class="muted">${esc(unitText(a.unit))}</span></h2><div id="panel-${i}" class="chart"></div></section>`).join("");
  return analytes;
}

function drawPanels() {
  if (!state.patient) return;
  ensurePanels().forEach(drawPanel);
}

function drawExposure() {
  const e = state.exposure;
  const section = document.getElementById("exposure").closest("section");
  if (!e) { section.hidden = true; return; }
  section.hidden = false;
  document.getElementById("exposure-title").textContent = `Exposure per day: ${e.metric}`;
  const traces = [], shapes = [];
  for (const series of e.series) {
    const [, , color] = COLORS[series.label];
    const x = series.windows.map(w => date((w.start_s + w.end_s) / 2));
    if (e.expected) {
      traces.push({ x, y: series.windows.map(w => 100 * w.mean), type: "bar", name: `${series.label} regimen`, marker: { color },
                    opacity: 0.8, text: series.windows.map(w => w.past ? "estimated" : "forecast"), hovertemplate: "%{y:.0f} %% (%{text})" });
    } else {
      const median = series.windows.map(w => w.quantiles[2]);
      traces.push({ x, y: median, mode: "markers", type: "scatter", name: `${series.label} regimen (median, 90 %)`,
                    marker: { color, size: 10, symbol: series.windows.map(w => w.past ? "circle" : "circle-open") },
                    error_y: { type: "data", symmetric: false, color, array: series.windows.map(w => w.quantiles[4] - w.quantiles[2]),
                               arrayminus: series.windows.map(w => w.quantiles[2] - w.quantiles[0]) },
                    text: series.windows.map(w => `P(in range) ${Math.round(100 * w.pta)} % · ${w.past ? "estimated" : "forecast"}`),
                    hovertemplate: "%{y:.3g}<br>%{text}" });
    }
  }
  if (!e.expected) {
    shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: e.low, y1: e.high, fillcolor: "rgba(46,125,50,0.10)", line: { width: 0 }, layer: "below" });
  }
  const windows = e.series[0].windows;
  Plotly.react("exposure", traces, {
    margin: { t: 10, r: 10, b: 60, l: 55 }, shapes, barmode: "group",
    xaxis: timeAxis(windows[0].start_s, windows[windows.length - 1].end_s),
    yaxis: { title: { text: e.expected ? "% of the day in range" : unitText(e.unit) }, rangemode: "tozero" },
    legend: { orientation: "h", y: -0.25 },
  }, { displaylogo: false, responsive: true });
  document.getElementById("exposure-note").textContent = e.expected
    ? "Expected fraction of each day with the level in range. Past days: estimated from every reading so far; later days: forecast."
    : `Target ${e.low}–${e.high} ${unitText(e.unit)} (green band). Filled: past days, estimated from every reading so far; open: forecast.`;
}

function drawFacts() {
  const p = state.patient, m = state.model;
  document.getElementById("title").textContent = `Patient ${p.patient_id} · ${p.model}`;
  document.title = `mipdstream · ${p.patient_id} · ${p.model}`;
  const declared = Object.fromEntries((m ? m.covariates : []).map(c => [c.name, c]));
  const covariates = Object.entries(p.covariates).map(([k, v]) => {
    const c = declared[k];
    return `<span class="fact" title="${esc(c ? c.description : "")}">${esc(k)} <b>${esc(typeof v === "number" ? +v.toFixed(3) : v)}</b> ${esc(c && c.unit ? unitText(c.unit) : "")}</span>`;
  }).join(" ");
  const t = p.target;
  const target = t ? `${esc(t.quantity)} ${t.low}–${t.high} ${esc(unitText(t.unit))} <span class="muted">(${t.source === "team" ? "set by the care team" : "default"}; ${esc(t.citation)})</span>`
    : '<span class="muted">no target</span>';
  document.getElementById("facts").innerHTML =
    `<div><span class="muted">Drug</span> ${esc(m && m.drug ? m.drug : "–")} · <span class="muted">Target</span> ${target}</div>` +
    `<div><span class="muted">Covariates</span> ${covariates || "none"}</div>` +
    `<div><span class="muted">First dose</span> ${state.doses.length ? esc(when(firstDoseS())) : "none yet"}</div>`;
  document.getElementById("report").href = `/api/v1${base}/report`;
}

function percent(x) { return x == null ? "–" : `${Math.round(100 * x)} %`; }

function drawRecommendation() {
  const box = document.getElementById("recommendation");
  const open = state.recommendations.find(r => r.status === "open");
  if (!open) { box.className = "muted"; box.textContent = "No open recommendation: the current regimen is about as good as the best alternative."; return; }
  const d = open.details || {};
  const typed = document.querySelector("#recommendation input.reason");
  const keep = typed ? typed.value : "";
  box.className = "";
  box.innerHTML = `<div class="proposal" data-recommendation="${esc(open.recommendation_id)}">
    <p class="regimen-line"><b>${esc(open.regimen.description)}</b> from ${esc(when(open.regimen.start_s))}</p>
    <table class="compare"><thead><tr><th></th><th>P(${esc(d.pta_label || "in target")}) over ${esc(d.window || "the next window")}</th><th>Median</th></tr></thead><tbody>
      <tr><th>Suggested</th><td>${percent(d.recommended_pta)}</td><td>${esc(fmt(d.recommended_median, d.unit))}</td></tr>
      <tr><th>Current: ${esc(d.current || "–")}</th><td>${percent(d.pta)}</td><td>${esc(fmt(d.median, d.unit))}</td></tr>
      ${d.later_from_h != null ? `<tr><th>From +${d.later_from_h} h: suggested / current</th><td>${percent(d.later_recommended_pta)} / ${percent(d.later_pta)}</td><td></td></tr>` : ""}
    </tbody></table>
    <p class="rationale">${esc(open.rationale)}</p>
    <p class="muted">Toxicity risk under the current regimen: P(${esc(d.risk_label || "above the target")}) ${percent(d.risk)} · recommendation ${esc(open.hash.slice(0, 12))}</p>
    <input type="text" class="reason" placeholder="comment (required)" data-id="${esc(open.recommendation_id)}">
    <button class="action accept" data-id="${esc(open.recommendation_id)}">Accept</button>
    <button class="action reject" data-id="${esc(open.recommendation_id)}">Reject</button>
    <span class="error" id="decision-error"></span></div>`;
  if (keep) box.querySelector("input.reason").value = keep;
  bindDecision();
}

function fmt(value, unit) {
  if (value == null) return "–";
  if (unit === "1") return `${Math.round(100 * value)} %`;
  return `${(+value).toPrecision(3)} ${unitText(unit)}`;
}

function drawTables() {
  document.querySelector("#readings tbody").innerHTML = [...state.readings].reverse().slice(0, 300).map(r =>
    `<tr class="reading" data-reading="${esc(r.reading_id)}"><td>${esc(when(r.measured_at))}</td><td>${esc(r.analyte)}</td><td>${r.value} ${esc(unitText(r.unit))}</td><td class="muted">${esc(r.device_id)}</td></tr>`).join("");
  document.querySelector("#doses tbody").innerHTML = [...state.doses].reverse().map(d =>
    `<tr><td>${esc(when(d.given_at))}</td><td>${d.amount_mg} mg ${esc(d.route)}${d.duration_s ? ` over ${+(d.duration_s / 3600).toFixed(2)} h` : ""}${d.status === "missed" ? " (missed)" : ""}</td><td class="muted">${esc(d.device_id)}</td></tr>`).join("");
  document.querySelector("#alerts tbody").innerHTML = state.alerts.map(a => `<tr data-alert="${esc(a.alert_id)}">
    <td>${esc(when(a.raised_at))}</td><td><span class="badge ${esc(a.severity)}">${esc(a.severity)}</span></td><td>${esc(a.message)}</td>
    <td>${a.status === "open" ? `<button class="action ack" data-id="${esc(a.alert_id)}">Acknowledge</button>` : `<span class="muted">${esc(a.status)}${a.acknowledged_by ? " by " + esc(a.acknowledged_by) : ""}</span>`}</td></tr>`).join("");
  document.querySelector("#recommendations tbody").innerHTML = state.recommendations.filter(r => r.status !== "open").map(r =>
    `<tr data-recommendation="${esc(r.recommendation_id)}"><td>${esc(when(r.created_at))}</td><td>${esc(r.regimen.description)}</td>
     <td class="rec-status">${esc(r.status)}</td><td class="muted">${esc(r.decided_by ?? "")}${r.reason ? ": " + esc(r.reason) : ""}</td></tr>`).join("");
  const current = state.regimen && state.regimen.current;
  document.getElementById("regimen").textContent = current
    ? `${current.description}, next dose ${when(current.start_s)} (${current.set_by})` : "none: no dose recorded";
  const p = state.posterior;
  if (p) {
    document.querySelector("#parameters tbody").innerHTML = p.parameter_table.map(row => {
      const u = unitText(row.unit === "1" ? "" : row.unit);
      const q = v => `<b>${(+v[1]).toPrecision(3)}</b> <span class="muted">(${(+v[0]).toPrecision(3)}–${(+v[2]).toPrecision(3)})</span>`;
      return `<tr><th>${esc(row.name)} <span class="muted">${esc(u)}</span></th><td>${row.fixed ? "fixed " + (+row.prior[1]).toPrecision(3) : q(row.posterior)}</td><td>${q(row.prior)}</td></tr>`;
    }).join("");
    document.getElementById("summary").textContent = p.source === "prior" ? "prior (no data assimilated yet)"
      : `posterior at ${when(p.epoch_s)} · ${state.readings.length} readings · last ${ago(state.readings.length ? state.readings.at(-1).measured_at : null)} · method ${p.method}`;
  }
  const s = state.nextSample;
  document.getElementById("next-sample").textContent = !s ? "–" : s.available
    ? `${when(s.epoch_s)}: expected to remove ${Math.round(s.variance_reduction * 100)} % of the ${s.metric} variance (assuming ${s.regimen})`
    : s.reason;
  bindAcks();
}

function bindAcks() {
  for (const button of document.querySelectorAll("button.ack")) {
    button.onclick = async () => { await guarded(() => api(`/alerts/${encodeURIComponent(button.dataset.id)}/acknowledge`, { method: "POST" })); loadLists(); };
  }
}

function bindDecision() {
  for (const button of document.querySelectorAll("#recommendation button.accept, #recommendation button.reject")) {
    button.onclick = async () => {
      const input = document.querySelector("#recommendation input.reason");
      const reason = input.value.trim();
      if (!reason) { input.focus(); input.placeholder = "a comment is required"; return; }
      const decision = button.classList.contains("accept") ? "accept" : "reject";
      const ok = await guarded(() => api(`/recommendations/${encodeURIComponent(button.dataset.id)}/decision`,
                                         { method: "POST", body: { decision, reason } }), "decision-error");
      if (ok) { await loadLists(); loadModel(); }
    };
  }
}

// Run a request; show its error on the page (element ``errorId``) instead of an uncaught rejection.
async function guarded(request, errorId) {
  try { await request(); return true; } catch (error) {
    const box = errorId && document.getElementById(errorId);
    if (box) box.textContent = error.message;
    return false;
  }
}

async function loadData() {
  [state.readings, state.doses] = await Promise.all([api(`${base}/readings`), api(`${base}/doses`)]);
}
async function loadModel() {
  state.posterior = await api(`${base}/posterior`);
  const names = state.posterior.analytes.map(a => a.name);
  const forecasts = await Promise.all(names.map(n => api(`${base}/forecast?analyte=${encodeURIComponent(n)}`)));
  state.forecasts = Object.fromEntries(names.map((n, i) => [n, forecasts[i]]));
  const hasPolicy = state.model && state.model.default_target;
  [state.exposure, state.nextSample] = await Promise.all([
    hasPolicy ? api(`${base}/exposure?daily=true&horizon_h=48`) : null, api(`${base}/next-sample`)]);
  drawPanels(); drawExposure(); drawTables();
}
async function loadLists() {
  [state.alerts, state.recommendations, state.regimen] = await Promise.all([
    api(`${base}/alerts`), api(`${base}/recommendations`), api(`${base}/regimen`)]);
  drawTables(); drawRecommendation();
}
async function loadAll() {
  const [patient, models] = await Promise.all([api(base), api("/models")]);
  state.patient = patient;
  state.model = models.find(m => m.name === patient.model) || null;
  await loadData();
  drawFacts();
  await loadLists();
  await loadModel();
}

const refreshModel = debounce(() => loadModel().catch(showError), 800);
const redrawPanels = debounce(drawPanels, 500);
function showError(error) { document.getElementById("summary").textContent = `could not load: ${error.message}`; }

function onEvent(kind, data) {
  if (data.patient_id !== patientId) return;
  if (kind === "reading") {
    if (!state.readings.some(r => r.reading_id === data.reading_id && r.device_id === data.device_id)) {
      state.readings.push({ ...data, received_at: null, bloq: false });
      state.readings.sort((a, b) => a.measured_at - b.measured_at);
    }
    redrawPanels();
  } else if (kind === "dose") {
    loadData().then(() => { drawFacts(); drawTables(); refreshModel(); }).catch(showError);
  } else if (kind === "posterior") {
    refreshModel();
  } else {
    loadLists().catch(showError); refreshModel();
  }
}

header().then(loadAll).catch(showError);
live(onEvent, () => loadAll().catch(showError));
