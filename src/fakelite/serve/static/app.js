// fakelite web page: upload a file to /v1/detect, show the verdict, face boxes, and for videos a frame
// strip with a per-frame score chart. Plain DOM, canvas and SVG; no external assets.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const fileInput = $("file"), drop = $("drop"), verdict = $("verdict"), keyInput = $("apikey");
  const meter = $("meter"), meterFill = $("meter-fill"), meterThr = $("meter-thr");
  const details = $("details"), preview = $("preview"), canvas = $("canvas"), caption = $("caption");
  const videoOut = $("video-out"), strip = $("strip"), chart = $("chart");
  let objectUrl = null;

  try { keyInput.value = sessionStorage.getItem("fakelite-key") || ""; } catch (e) { /* storage off */ }
  keyInput.addEventListener("change", () => {
    try { sessionStorage.setItem("fakelite-key", keyInput.value); } catch (e) { /* storage off */ }
    loadModelInfo();
  });

  function headers() {
    const k = keyInput.value.trim();
    return k ? { "X-API-Key": k } : {};
  }

  // Score 0 (real) → green, 1 (fake) → red, through amber.
  function scoreColour(s) {
    const hue = Math.round(130 * (1 - Math.max(0, Math.min(1, s))));
    return `hsl(${hue}, 75%, 42%)`;
  }

  function setVerdict(state, html) {
    verdict.className = "verdict " + state;
    verdict.innerHTML = html;
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  async function loadModelInfo() {
    const el = $("model-info");
    try {
      const r = await fetch("/v1/model", { headers: headers() });
      if (!r.ok) { el.textContent = r.status === 401 ? "Model information needs the API key." : "Model not ready."; return; }
      const m = await r.json();
      const arch = m.arch && m.arch.name ? m.arch.name : "model";
      const bits = m.quant ? ` · ${describeQuant(m.quant)}` : " · full precision";
      el.textContent = `Model ${arch}${bits} · id ${m.model_id} · threshold ${Number(m.threshold).toFixed(3)}`;
      if (m.limits) $("limits").textContent = `· up to ${m.limits.max_upload_mb} MB`;
    } catch (e) { el.textContent = "Model information unavailable."; }
  }

  function describeQuant(q) {
    const w = q.w_bits ?? q.weight_bits ?? (q.config && q.config.w_bits);
    const a = q.a_bits ?? q.act_bits ?? (q.config && q.config.a_bits);
    return w ? `W${w}A${a ?? "?"}` : "quantized";
  }

  function reset() {
    meter.hidden = true; details.hidden = true; preview.hidden = true; videoOut.hidden = true;
    strip.innerHTML = ""; chart.innerHTML = ""; details.innerHTML = "";
    if (objectUrl) { URL.revokeObjectURL(objectUrl); objectUrl = null; }
  }

  async function check(file) {
    if (!file) return;
    reset();
    setVerdict("busy", `<span class="verdict-label">Checking ${esc(file.name)}…</span>`);
    const form = new FormData();
    form.append("file", file, file.name);
    let r, body;
    try {
      r = await fetch("/v1/detect", { method: "POST", body: form, headers: headers() });
      body = await r.json();
    } catch (e) {
      setVerdict("error", `<span class="verdict-label">Could not reach the server.</span>`);
      return;
    }
    if (!r.ok) {
      const msg = body && body.error ? body.error.message : `HTTP ${r.status}`;
      const retry = r.headers.get("Retry-After");
      setVerdict("error", `<span class="verdict-label">Not checked: ${esc(msg)}${retry ? ` (retry in ${esc(retry)} s)` : ""}</span>`);
      return;
    }
    showResult(file, body);
  }

  function showResult(file, res) {
    if (res.score == null) {
      setVerdict("none", `<span class="pill">NO VERDICT</span>` +
        `<span class="verdict-label">${esc(res.note || "nothing to score")}</span>` +
        `<span class="score">the model scores faces; try a file where a face is visible</span>`);
    } else {
      showVerdict(res);
    }
    const rows = [["file", res.filename], ["type", `${res.kind} (${res.format})`],
      res.width ? ["size", `${res.width}×${res.height}${res.duration_s ? `, ${res.duration_s.toFixed(1)} s` : ""}`] : null,
      ["faces", res.faces.length ? res.faces.map((f) => (f.score == null ? "?" : f.score.toFixed(2))).join(", ") : (res.kind === "video" ? `${res.frames_with_face ?? 0} of ${res.frames.length} frames` : "none found (whole image scored)")],
      res.kind === "video" ? ["frames", `${res.frames.length} analysed, ${res.aggregate} score`] : null,
      ["latency", `${res.latency_ms.toFixed(0)} ms`], ["model", String(res.model_id)]].filter(Boolean);
    details.innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
    details.hidden = false;
    objectUrl = URL.createObjectURL(file);
    if (res.kind === "image") showImage(objectUrl, res); else showVideo(objectUrl, res);
  }

  function showVerdict(res) {
    const label = res.label === "fake" ? "fake" : "real";
    setVerdict(label,
      `<span class="pill" data-label="${label}">${label.toUpperCase()}</span>` +
      `<span class="verdict-label">${label === "fake" ? "Likely a deepfake" : "No sign of manipulation found"}</span>` +
      `<span class="score">score ${res.score.toFixed(3)} (threshold ${res.threshold.toFixed(3)})</span>`);
    meter.hidden = false;
    meterFill.style.left = `${(100 * res.score).toFixed(1)}%`;
    meterThr.style.left = `${(100 * res.threshold).toFixed(1)}%`;
  }

  function drawBoxes(ctx, faces, scale, lw) {
    for (const f of faces) {
      if (!f.box || f.box.length < 4) continue;
      const [x, y, w, h] = f.box.map((v) => v * scale);
      const col = scoreColour(f.score ?? 0);
      ctx.lineWidth = lw; ctx.strokeStyle = col; ctx.strokeRect(x, y, w, h);
      if (f.score != null) {
        const txt = f.score.toFixed(2), fs = Math.max(11, Math.round(lw * 5));
        ctx.font = `bold ${fs}px system-ui, sans-serif`;
        const tw = ctx.measureText(txt).width + 8;
        ctx.fillStyle = col; ctx.fillRect(x, Math.max(0, y - fs - 6), tw, fs + 6);
        ctx.fillStyle = "#fff"; ctx.fillText(txt, x + 4, Math.max(fs, y - 5));
      }
    }
  }

  function showImage(url, res) {
    const img = new Image();
    img.onload = () => {
      // small images are drawn enlarged (crisp pixels) so boxes and labels stay readable
      const scale = Math.max(1, Math.min(8, Math.floor(360 / Math.max(img.naturalWidth, img.naturalHeight))));
      canvas.width = img.naturalWidth * scale; canvas.height = img.naturalHeight * scale;
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = scale === 1;
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      drawBoxes(ctx, res.faces, scale, Math.max(2, canvas.width / 200));
      canvas.setAttribute("aria-label", `${res.filename}, ${res.faces.length} face box(es), verdict ${res.label}`);
      caption.textContent = res.faces.length ? "Face boxes coloured by score: green real → red fake."
        : (res.score == null ? "No face found." : "No face found: the whole image was scored.");
      preview.hidden = false;
    };
    img.onerror = () => { caption.textContent = "This image format cannot be shown by your browser."; preview.hidden = false; };
    img.src = url;
  }

  function showVideo(url, res) {
    videoOut.hidden = false;
    const frames = res.frames || [];
    for (const fr of frames) {
      const li = document.createElement("li");
      const s = fr.score == null ? null : fr.score;
      const chip = document.createElement("span");
      chip.className = "chip"; chip.textContent = s == null ? "–" : s.toFixed(2);
      chip.style.borderColor = s == null ? "" : scoreColour(s);
      li.appendChild(chip);
      const t = document.createElement("span");
      t.textContent = fr.time != null ? `${fr.time.toFixed(1)} s` : `#${fr.index}`;
      li.appendChild(t);
      li.dataset.index = fr.index;
      strip.appendChild(li);
    }
    drawChart(frames, res.threshold);
    thumbnails(url, frames).catch(() => { /* the browser cannot decode this codec: scores stay as chips */ });
  }

  async function thumbnails(url, frames) {
    const v = document.createElement("video");
    v.muted = true; v.preload = "auto"; v.src = url;
    await new Promise((ok, bad) => { v.onloadeddata = ok; v.onerror = bad; setTimeout(bad, 5000); });
    const items = strip.querySelectorAll("li");
    for (let i = 0; i < frames.length; i++) {
      const fr = frames[i];
      if (fr.time == null) continue;
      v.currentTime = Math.min(fr.time, Math.max(0, v.duration - 0.001));
      await new Promise((ok) => { v.onseeked = ok; setTimeout(ok, 1500); });
      const c = document.createElement("canvas");
      const h = 72, scale = h / v.videoHeight;
      c.height = h; c.width = Math.round(v.videoWidth * scale);
      const ctx = c.getContext("2d");
      ctx.drawImage(v, 0, 0, c.width, c.height);
      drawBoxes(ctx, fr.faces || [], scale, 2);
      c.style.borderColor = fr.score == null ? "" : scoreColour(fr.score);
      c.setAttribute("role", "img");
      c.setAttribute("aria-label", `frame ${fr.index}, score ${fr.score == null ? "none" : fr.score.toFixed(2)}`);
      items[i].replaceChild(c, items[i].firstChild);
    }
  }

  function drawChart(frames, thr) {
    const W = 640, H = 180, L = 36, R = 10, T = 10, B = 26;
    const pts = frames.filter((f) => f.score != null);
    const n = Math.max(1, frames.length - 1);
    const x = (i) => L + (W - L - R) * (frames.length === 1 ? 0.5 : i / n);
    const y = (s) => T + (H - T - B) * (1 - s);
    let path = "";
    frames.forEach((f, i) => { if (f.score != null) path += `${path ? "L" : "M"}${x(i).toFixed(1)},${y(f.score).toFixed(1)} `; });
    const dots = frames.map((f, i) => f.score == null ? "" :
      `<circle cx="${x(i).toFixed(1)}" cy="${y(f.score).toFixed(1)}" r="3.5" fill="${scoreColour(f.score)}"><title>frame ${f.index}: ${f.score.toFixed(3)}</title></circle>`).join("");
    const ticks = [0, 0.5, 1].map((s) => `<text x="${L - 6}" y="${y(s) + 4}" text-anchor="end">${s}</text>`).join("");
    const last = frames.length ? frames[frames.length - 1] : null;
    chart.innerHTML =
      `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="Score per frame: ${pts.length} frames, threshold ${thr.toFixed(2)}">` +
      `<line class="axis" x1="${L}" y1="${y(0)}" x2="${W - R}" y2="${y(0)}"/>` +
      `<line class="axis" x1="${L}" y1="${y(0)}" x2="${L}" y2="${y(1)}"/>` + ticks +
      `<line class="thr" x1="${L}" y1="${y(thr)}" x2="${W - R}" y2="${y(thr)}"><title>threshold ${thr.toFixed(3)}</title></line>` +
      `<path class="line" d="${path}"/>` + dots +
      `<text x="${L}" y="${H - 6}">${frames.length && frames[0].time != null ? frames[0].time.toFixed(1) + " s" : "first"}</text>` +
      `<text x="${W - R}" y="${H - 6}" text-anchor="end">${last && last.time != null ? last.time.toFixed(1) + " s" : "last"}</text>` +
      `</svg>`;
  }

  fileInput.addEventListener("change", () => check(fileInput.files[0]));
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { const f = e.dataTransfer && e.dataTransfer.files[0]; if (f) check(f); });
  // keyboard: the file input itself takes focus (visible ring on its button); Enter/Space open the picker
  loadModelInfo();
})();
