// brainmri web page: upload slices to /api/predict and show label, probabilities and Grad-CAM.
// Plain DOM code, no external resources; all text from the server goes in via textContent.
"use strict";

const state = {
  token: null,
  maxBytes: 20 * 1024 * 1024,
  pending: [], // files waiting for a token
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function readToken() {
  // The token can be handed over in the URL fragment (#token=...), which is never sent to the server.
  const match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem("brainmri-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  state.token = sessionStorage.getItem("brainmri-token");
}

function authHeaders() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

function showMessage(text) {
  const box = document.getElementById("messages");
  box.appendChild(el("div", "message", text));
}

function askForToken() {
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("token-input").focus();
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) {
    // not JSON: fall through
  }
  return "HTTP " + response.status + " " + response.statusText;
}

function formatPercent(p) {
  return (100 * p).toFixed(1) + " %";
}

function renderCard(card) {
  const dl = document.getElementById("model-card");
  dl.replaceChildren();
  const metrics = card.metrics || {};
  const acc = metrics.accuracy !== undefined ? metrics.accuracy : metrics.test_accuracy;
  const rows = [
    ["Name", card.name],
    ["Architecture", card.arch],
    ["Classes", (card.classes || []).join(", ")],
    ["Input", card.image_size ? card.image_size + " x " + card.image_size + " px grayscale" : undefined],
    ["Weights", card.weights_origin || card.weights],
    ["Test accuracy", typeof acc === "number" ? formatPercent(acc) : undefined],
    ["Intended use", card.intended_use],
    ["Limitations", card.limitations],
    ["Created", card.created],
  ];
  for (const [key, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    dl.appendChild(el("dt", null, key));
    dl.appendChild(el("dd", null, String(value)));
  }
  document.getElementById("model-json").textContent = JSON.stringify(card, null, 2);
  if (card.notice) document.getElementById("notice-text").textContent = card.notice;
}

async function loadModelCard() {
  const response = await fetch("/api/model", { headers: authHeaders() });
  if (response.status === 401) {
    askForToken();
    return;
  }
  if (!response.ok) {
    showMessage("Could not load the model card: " + (await errorText(response)));
    return;
  }
  renderCard(await response.json());
}

async function loadLimits() {
  try {
    const response = await fetch("/health");
    const body = await response.json();
    state.maxBytes = body.limits.max_bytes;
    document.getElementById("limits").textContent =
      "up to " + (state.maxBytes / 1048576).toFixed(0) + " MB a file";
  } catch (e) {
    // keep the default shown in the page
  }
}

function newResultCard(file) {
  const card = el("article", "result pending");
  card.appendChild(el("h3", "name", file.name));
  card.appendChild(el("p", "status", "Analysing\u2026"));
  document.getElementById("results").prepend(card);
  return card;
}

function showRejected(card, message) {
  card.className = "result rejected";
  card.querySelector(".status").remove();
  card.appendChild(el("p", "error", "Rejected: " + message));
}

function figure(src, alt, className, caption) {
  const fig = el("figure");
  const img = el("img", className);
  img.alt = alt;
  img.src = src;
  fig.appendChild(img);
  fig.appendChild(el("figcaption", null, caption));
  return fig;
}

function showResult(card, result, classes) {
  card.className = "result ok" + (result.input_warning ? " flagged" : "");
  card.querySelector(".status").remove();
  if (result.input_warning) {
    // The prediction is kept, but the image does not look like the slices the model was trained on.
    const banner = el("p", "input-warning", "Warning: " + result.input_warning +
      ". The model was not made for images like this one: do not trust the prediction below.");
    banner.setAttribute("role", "alert");
    card.appendChild(banner);
  }
  if (result.frame) {
    // A multi-frame file (a DICOM series, a GIF, a multi-page TIFF): one frame was classified.
    const total = result.frames > 1 ? result.frames : "an unknown number of";
    card.appendChild(el("p", "frame-note", "Frame " + result.frame + " of " + total +
      " frames in this file was classified; the others were not."));
  }
  const body = el("div", "body");
  if (result.slice_png) {
    body.appendChild(figure("data:image/png;base64," + result.slice_png, "slice as the model saw it", "slice",
      "Slice (as the model saw it)"));
  }
  if (result.overlay_png) {
    body.appendChild(figure("data:image/png;base64," + result.overlay_png, "Grad-CAM overlay", "overlay",
      "Grad-CAM: regions that drove \u201c" + result.label + "\u201d"));
  } else if (result.overlay_error) {
    body.appendChild(el("p", "overlay-error", "No Grad-CAM overlay: " + result.overlay_error));
  }
  const pred = el("div", "prediction");
  pred.appendChild(el("div", "label-caption", "Predicted class"));
  pred.appendChild(el("p", "label", result.label));
  const bars = el("div", "bars");
  bars.setAttribute("role", "list");
  for (const name of classes) {
    const p = result.probabilities[name];
    const row = el("div", "bar-row" + (name === result.label ? " top" : ""));
    row.setAttribute("role", "listitem");
    row.dataset.class = name;
    row.appendChild(el("span", "bar-name", name));
    const track = el("span", "bar-track");
    const fill = el("span", "bar-fill");
    fill.style.width = (100 * p).toFixed(1) + "%";
    track.appendChild(fill);
    row.appendChild(track);
    row.appendChild(el("span", "bar-value", formatPercent(p)));
    bars.appendChild(row);
  }
  pred.appendChild(bars);
  body.appendChild(pred);
  card.appendChild(body);
}

async function analyse(file) {
  const card = newResultCard(file);
  if (file.size > state.maxBytes) {
    showRejected(card, "file too large (limit " + (state.maxBytes / 1048576).toFixed(0) + " MB a file)");
    return;
  }
  const form = new FormData();
  form.append("files", file, file.name);
  let response;
  try {
    response = await fetch("/api/predict?overlay=1", { method: "POST", headers: authHeaders(), body: form });
  } catch (e) {
    showRejected(card, "the server could not be reached (" + e.message + ")");
    return;
  }
  if (response.status === 401) {
    card.remove();
    state.pending.push(file);
    askForToken();
    return;
  }
  if (!response.ok) {
    showRejected(card, await errorText(response));
    return;
  }
  const body = await response.json();
  const result = body.results[0];
  if (result.ok) showResult(card, result, body.classes);
  else showRejected(card, result.error);
}

async function analyseAll(files) {
  // Two at a time: the server's thread pool is small, and results appear as they finish.
  const queue = Array.from(files);
  const worker = async () => {
    while (queue.length) await analyse(queue.shift());
  };
  await Promise.all([worker(), worker()]);
}

function setUp() {
  readToken();
  const drop = document.getElementById("drop");
  const input = document.getElementById("file-input");
  input.addEventListener("change", () => {
    analyseAll(input.files);
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("dragging"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    analyseAll(event.dataTransfer.files);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = document.getElementById("token-input").value;
    sessionStorage.setItem("brainmri-token", state.token);
    document.getElementById("token-form").hidden = true;
    loadModelCard();
    const pending = state.pending.splice(0);
    if (pending.length) analyseAll(pending);
  });
  loadLimits();
  loadModelCard();
}

document.addEventListener("DOMContentLoaded", setUp);
