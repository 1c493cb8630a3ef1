// The reference bedside display of ceusd. It follows the MQTT contract (docs/asyncapi.yaml):
// it shows a result only for the exam the daemon's retained status names, only while that
// status says online and is recent, and only while this page is connected to the broker.
//
// URL parameters (all optional):
//   broker  MQTT-over-WebSockets URL (default: this page's own host and port, the Mosquitto
//           websockets listener that serves the page)
//   root    topic root (default "ceus")
//   device  device id (default: the one device that publishes a status under the root)
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const defaultBroker = (window.location.protocol === "https:" ? "wss://" : "ws://") +
    (window.location.host || "127.0.0.1:9001");
  const BROKER = params.get("broker") || defaultBroker;
  const ROOT = params.get("root") || "ceus";
  const DEVICE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

  // The daemon publishes its status every 5 s and timing every 0.5 s.
  const STATUS_STALE_MS = 12000;
  const TIMING_STALE_MS = 2500;
  const PREVIEW_STALE_MS = 5000;
  const REPLY_TIMEOUT_MS = 6000;
  const MIN_ROI = 8;

  const $ = (id) => document.getElementById(id);

  const state = {
    device: null,
    connected: false,
    everConnected: false,
    lostSince: null,
    status: null,
    statusAt: 0,
    examId: null,
    timing: null,
    timingAt: 0,
    result: null,
    heatmap: null, // { resultId, url, bytes }
    preview: null,
    previewAt: 0,
    previewImage: null,
    draft: null, // ROI drawn, frame pixels
    drag: null,
    pending: new Map(),
    commandCount: 0,
    laterResults: new Map(),
    waitingHeatmaps: new Map(),
  };

  // ------------------------------------------------------------------ device and topics

  const requested = params.get("device");
  if (requested !== null && !DEVICE_PATTERN.test(requested)) {
    document.body.textContent = "device=" + requested +
      ": a device id is 1 to 64 letters, digits, '-' or '_'";
    throw new Error("bad device id");
  }
  state.device = requested;

  const base = () => ROOT + "/" + state.device;
  const discovered = new Set();

  // ------------------------------------------------------------------ connection

  const client = mqtt.connect(BROKER, {
    clientId: "ceusd-display-" + Math.random().toString(16).slice(2, 10),
    clean: true,
    // Mosquitto 2.0's websockets listener can hold a PINGRESP behind larger messages for
    // seconds on a busy cart: 10 s (15 s to notice a silent loss; a closed socket is noticed
    // at once) avoids false alarms.
    keepalive: 10,
    reconnectPeriod: 2000,
    connectTimeout: 5000,
    protocolVersion: 4,
  });

  client.on("connect", () => {
    state.connected = true;
    state.everConnected = true;
    state.lostSince = null;
    if (state.device) {
      subscribeDevice();
    } else {
      client.subscribe(ROOT + "/+/status", { qos: 1 });
    }
    render();
  });
  const lost = () => {
    if (state.connected || state.lostSince === null) {
      state.lostSince = Date.now();
    }
    state.connected = false;
    render();
  };
  client.on("close", () => { console.info("mqtt: connection closed"); lost(); });
  client.on("offline", lost);
  client.on("error", (e) => {
    $("connection").title = String(e && e.message ? e.message : e);
    lost();
  });

  function subscribeDevice() {
    client.subscribe([base() + "/status", base() + "/exam/+/timing",
      base() + "/exam/+/result", base() + "/exam/+/heatmap",
      base() + "/cmd/reply", base() + "/preview"], { qos: 1 });
  }

  client.on("message", (topic, payload) => {
    if (!state.device) {
      discover(topic);
      return;
    }
    const prefix = base() + "/";
    if (!topic.startsWith(prefix)) {
      return;
    }
    const rest = topic.slice(prefix.length).split("/");
    try {
      if (rest.length === 1 && rest[0] === "status") {
        onStatus(payload);
      } else if (rest.length === 1 && rest[0] === "preview") {
        onPreview(payload);
      } else if (rest.length === 2 && rest[0] === "cmd" && rest[1] === "reply") {
        onReply(payload);
      } else if (rest.length === 3 && rest[0] === "exam") {
        if (rest[2] === "timing") onTiming(rest[1], payload);
        if (rest[2] === "result") onResult(rest[1], payload);
        if (rest[2] === "heatmap") onHeatmap(rest[1], payload);
      }
    } catch (e) {
      console.error("message on " + topic + ": " + e);
    }
    render();
  });

  // Without ?device=, the page follows the one device that has a status under the root.
  // Two or more: it shows them and asks for one, rather than guess whose patient it is.
  function discover(topic) {
    const parts = topic.split("/");
    const id = parts[parts.length - 2];
    if (!DEVICE_PATTERN.test(id)) return;
    discovered.add(id);
    clearTimeout(discover.timer);
    discover.timer = setTimeout(() => {
      if (discovered.size === 1) {
        state.device = [...discovered][0];
        client.unsubscribe(ROOT + "/+/status");
        subscribeDevice();
      } else {
        $("device-id").textContent = "several: add ?device=" + [...discovered].join(" or ?device=");
      }
      render();
    }, 1500);
  }

  // ------------------------------------------------------------------ messages

  const decoder = new TextDecoder();
  const json = (payload) => JSON.parse(decoder.decode(payload));

  function onStatus(payload) {
    if (payload.length === 0) return;
    const s = json(payload);
    state.status = s;
    state.statusAt = Date.now();
    // An online status names the current exam (null between exams); an offline one says
    // nothing about it, and what was shown stays withheld until the device is back.
    if (s.online && (s.exam_id || null) !== state.examId) {
      newExam(s.exam_id || null);
    }
  }

  // A new exam clears everything the screen showed of the previous one. A result that came
  // before the status naming its exam (retained messages on connecting) is taken up now.
  function newExam(examId) {
    state.examId = examId;
    state.timing = null;
    state.result = (examId && state.laterResults.get(examId)) || null;
    setHeatmap(null);
    takeUpHeatmap();
    state.draft = null;
  }

  // Results of exams that are not (yet) current, and heatmaps waiting for their result (it
  // is published first, but retained messages and other exams' can come in any order): a
  // few of the newest, by exam.
  function remember(map, examId, value) {
    map.delete(examId);
    map.set(examId, value);
    while (map.size > 4) map.delete(map.keys().next().value);
  }

  function onTiming(examId, payload) {
    const t = json(payload);
    if (t.exam_id !== examId) return;
    if (examId !== state.examId) return;
    state.timing = t;
    state.timingAt = Date.now();
  }

  function onResult(examId, payload) {
    if (payload.length === 0) {
      // The daemon cleared this exam's retained result (a new exam started).
      state.laterResults.delete(examId);
      if (state.result && state.result.exam_id === examId) {
        state.result = null;
        setHeatmap(null);
      }
      return;
    }
    const r = json(payload);
    if (r.exam_id !== examId) return;
    if (examId !== state.examId) {
      const kept = state.laterResults.get(examId);
      if (!kept || kept.revision <= r.revision) remember(state.laterResults, examId, r);
      return;
    }
    if (state.result && state.result.exam_id === examId && state.result.revision > r.revision) {
      return;
    }
    state.result = r;
    if (state.heatmap && state.heatmap.resultId !== r.result_id) setHeatmap(null);
    takeUpHeatmap();
  }

  function onHeatmap(examId, payload) {
    if (payload.length === 0) {
      state.waitingHeatmaps.delete(examId);
      if (state.heatmap && state.heatmap.examId === examId) setHeatmap(null);
      return;
    }
    const bytes = new Uint8Array(payload);
    const resultId = pngText(bytes, "ceusd:result_id");
    if (!resultId) return;
    remember(state.waitingHeatmaps, examId, { examId, resultId, bytes, url: null });
    if (examId === state.examId) takeUpHeatmap();
  }

  // Shows the waiting heatmap of the current result, if it has come: every heatmap reaches
  // the screen through here and `verifyAndShow`.
  function takeUpHeatmap() {
    const r = state.result;
    const entry = r && state.waitingHeatmaps.get(r.exam_id);
    if (!entry || entry.resultId !== r.result_id) return;
    state.waitingHeatmaps.delete(r.exam_id);
    verifyAndShow(entry);
  }

  // Matched by the result id in the PNG and, where the browser allows (a secure context),
  // by the SHA-256 the result names.
  function verifyAndShow(entry) {
    const expected = state.result && state.result.heatmap && state.result.heatmap.sha256;
    if (!expected) return;
    if (!(window.crypto && crypto.subtle)) {
      setHeatmap(entry);
      render();
      return;
    }
    crypto.subtle.digest("SHA-256", entry.bytes).then((digest) => {
      const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
      if (hex === expected && state.result && state.result.result_id === entry.resultId) {
        entry.verified = "sha256";
        setHeatmap(entry);
      } else if (hex !== expected) {
        $("heatmap-note").textContent = "heatmap refused: its SHA-256 does not match the result";
      }
      render();
    });
  }

  function setHeatmap(entry) {
    if (state.heatmap && state.heatmap.url) {
      URL.revokeObjectURL(state.heatmap.url);
      state.heatmap.url = null;
    }
    if (entry && !entry.url) {
      entry.url = URL.createObjectURL(new Blob([entry.bytes], { type: "image/png" }));
    }
    state.heatmap = entry;
  }

  // The text of a PNG tEXt chunk, or null.
  function pngText(bytes, keyword) {
    const sig = [137, 80, 78, 71, 13, 10, 26, 10];
    if (bytes.length < 8 || sig.some((b, i) => bytes[i] !== b)) return null;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = 8;
    while (at + 8 <= bytes.length) {
      const len = view.getUint32(at);
      const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
      const data = bytes.subarray(at + 8, at + 8 + len);
      if (type === "tEXt") {
        const nul = data.indexOf(0);
        if (nul > 0 && String.fromCharCode(...data.subarray(0, nul)) === keyword) {
          return String.fromCharCode(...data.subarray(nul + 1));
        }
      }
      if (type === "IEND") break;
      at += 12 + len;
    }
    return null;
  }

  function onPreview(payload) {
    const p = json(payload);
    const img = new Image();
    img.onload = () => {
      state.preview = p;
      state.previewImage = img;
      state.previewAt = Date.now();
      drawPreview();
    };
    img.src = "data:image/jpeg;base64," + p.jpeg;
  }

  // ------------------------------------------------------------------ commands

  const COMMAND_NAMES = {
    start_exam: "Start exam", stop_exam: "Stop exam", mark_injection: "Mark injection",
    set_roi: "Set ROI", rescore: "Rescore", status: "Status",
  };

  function send(command, fields, what) {
    if (!state.connected || !state.device) {
      addReply({ id: null, label: what, outcome: "refused", text: "not sent: no connection to the broker" });
      return;
    }
    state.commandCount += 1;
    const id = "display-" + Date.now().toString(36) + "-" + state.commandCount;
    const body = Object.assign({ id, command }, fields);
    // Commands on the running exam name the exam on screen: the daemon refuses them if
    // another exam has begun meanwhile, rather than apply them to the wrong patient.
    if (command !== "start_exam" && command !== "status" && state.examId) body.exam_id = state.examId;
    const entry = { id, label: what, outcome: "pending", text: "sent", sentAt: Date.now() };
    state.pending.set(id, entry);
    addReply(entry);
    // QoS 1, never retained: a retained command would be carried out again on reconnection.
    client.publish(base() + "/cmd", JSON.stringify(body), { qos: 1, retain: false });
  }

  function onReply(payload) {
    const r = json(payload);
    const entry = r.id && state.pending.get(r.id);
    if (!entry) return; // another display's command
    state.pending.delete(r.id);
    const late = entry.outcome === "no-reply" ? " (late reply)" : "";
    entry.outcome = r.ok ? "ok" : "refused";
    entry.text = (r.ok ? "OK" + describeReply(r) : "refused: " + r.error) + late;
    entry.reply = r;
    renderReplies();
  }

  function describeReply(r) {
    const d = r.data || {};
    if (r.command === "mark_injection" && typeof d.injection_s === "number") {
      return " — injection at " + d.injection_s.toFixed(1) + " s of the recording";
    }
    if (r.command === "rescore" && d.result_id) return " — scoring as " + d.result_id;
    if ((r.command === "start_exam" || r.command === "stop_exam") && d.exam_id) return " — exam " + d.exam_id;
    if (r.command === "set_roi" && d.ceus_roi) return " — " + roiText(d.ceus_roi);
    return "";
  }

  const replies = [];
  function addReply(entry) {
    entry.at = new Date();
    replies.unshift(entry);
    replies.length = Math.min(replies.length, 6);
    renderReplies();
  }

  function renderReplies() {
    const list = $("replies");
    list.textContent = "";
    for (const e of replies) {
      const li = document.createElement("li");
      li.dataset.outcome = e.outcome;
      if (e.id) li.dataset.id = e.id;
      li.textContent = e.at.toLocaleTimeString() + "  " + e.label + ": " + e.text;
      list.appendChild(li);
    }
  }

  $("start-exam").addEventListener("click", () => send("start_exam", {}, COMMAND_NAMES.start_exam));
  $("stop-exam").addEventListener("click", () => send("stop_exam", {}, COMMAND_NAMES.stop_exam));
  for (const b of document.querySelectorAll("button.mark")) {
    b.addEventListener("click", () => {
      const ago = Number(b.dataset.ago);
      send("mark_injection", { seconds_ago: ago },
        COMMAND_NAMES.mark_injection + (ago === 0 ? " (now)" : " (injected " + ago + " s ago)"));
    });
  }
  $("send-roi").addEventListener("click", () => {
    if (state.draft) send("set_roi", { roi: state.draft }, COMMAND_NAMES.set_roi + " " + roiText(state.draft));
  });
  $("rescore").addEventListener("click", () => {
    const fields = state.draft ? { roi: state.draft } : {};
    send("rescore", fields, COMMAND_NAMES.rescore + (state.draft ? " with " + roiText(state.draft) : ""));
  });

  // ------------------------------------------------------------------ ROI drawing

  const canvas = $("preview");
  function toFrame(ev) {
    const p = state.preview;
    if (!p) return null;
    const box = canvas.getBoundingClientRect();
    const fx = ((ev.clientX - box.left) / box.width) * p.frame.width;
    const fy = ((ev.clientY - box.top) / box.height) * p.frame.height;
    return {
      x: Math.max(0, Math.min(p.frame.width, fx)),
      y: Math.max(0, Math.min(p.frame.height, fy)),
    };
  }
  canvas.addEventListener("pointerdown", (ev) => {
    const at = toFrame(ev);
    if (!at) return;
    canvas.setPointerCapture(ev.pointerId);
    state.drag = { from: at, to: at };
    drawPreview();
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!state.drag) return;
    const at = toFrame(ev);
    if (at) state.drag.to = at;
    drawPreview();
  });
  const endDrag = (ev) => {
    if (!state.drag) return;
    const at = toFrame(ev);
    if (at) state.drag.to = at;
    const { from, to } = state.drag;
    state.drag = null;
    const roi = {
      x: Math.round(Math.min(from.x, to.x)),
      y: Math.round(Math.min(from.y, to.y)),
      width: Math.round(Math.abs(to.x - from.x)),
      height: Math.round(Math.abs(to.y - from.y)),
    };
    state.draft = roi.width >= MIN_ROI && roi.height >= MIN_ROI ? roi : null;
    render();
  };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", () => { state.drag = null; drawPreview(); });

  function drawPreview() {
    const ctx = canvas.getContext("2d");
    const p = state.preview;
    const img = state.previewImage;
    if (!p || !img) return;
    if (canvas.width !== p.image.width || canvas.height !== p.image.height) {
      canvas.width = p.image.width;
      canvas.height = p.image.height;
    }
    canvas.dataset.frameWidth = p.frame.width;
    canvas.dataset.frameHeight = p.frame.height;
    const sx = p.image.width / p.frame.width;
    const sy = p.image.height / p.frame.height;
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const rect = (r, colour, dash, width) => {
      ctx.save();
      ctx.strokeStyle = colour;
      ctx.lineWidth = width;
      ctx.setLineDash(dash);
      ctx.strokeRect(r.x * sx, r.y * sy, r.width * sx, r.height * sy);
      ctx.restore();
    };
    if (p.panes) {
      rect(p.panes.b_mode, "#777", [4, 4], 1);
      rect(p.panes.ceus, "#777", [4, 4], 1);
    }
    if (p.roi && p.exam_id === state.examId) rect(p.roi, "#3ddc84", [], 2);
    if (state.draft) rect(state.draft, "#ffd400", [8, 4], 3);
    if (state.drag) {
      const { from, to } = state.drag;
      rect({ x: Math.min(from.x, to.x), y: Math.min(from.y, to.y),
        width: Math.abs(to.x - from.x), height: Math.abs(to.y - from.y) }, "#ffd400", [8, 4], 3);
    }
  }

  // ------------------------------------------------------------------ rendering

  const roiText = (r) => r.width + "×" + r.height + " at " + r.x + "," + r.y;
  const fmt = (x, digits) => (typeof x === "number" ? x.toFixed(digits) : "—");

  // What the screen may present as the current patient's, and why not when it may not.
  function presentable() {
    const now = Date.now();
    if (!state.connected) return { ok: false, why: "no connection to the broker: not current" };
    const s = state.status;
    if (!s) return { ok: false, why: "waiting for the device's status" };
    if (!s.online) return { ok: false, why: "device offline (" + (s.detail || "offline") + "): not current" };
    if ((s.exam_id || null) !== state.examId) return { ok: false, why: "the device's current exam is another one" };
    if (now - state.statusAt > STATUS_STALE_MS) {
      return { ok: false, why: "no word from the device for " + Math.round((now - state.statusAt) / 1000) + " s: not current" };
    }
    return { ok: true };
  }

  function render() {
    const now = Date.now();
    const s = state.status;
    const shown = presentable();

    // Connection.
    const conn = $("connection");
    if (state.connected) {
      conn.dataset.state = "connected";
      conn.textContent = "broker connected";
    } else {
      conn.dataset.state = state.everConnected ? "lost" : "connecting";
      conn.textContent = state.everConnected ? "broker connection lost" : "connecting to " + BROKER;
    }
    const lostBanner = $("connection-lost");
    lostBanner.hidden = state.connected || state.lostSince === null;
    if (!lostBanner.hidden) {
      $("connection-lost-text").textContent = "No connection to the broker for " +
        Math.max(0, Math.round((now - state.lostSince) / 1000)) + " s — nothing shown is current";
    }

    // Device.
    $("device-id").textContent = state.device || $("device-id").textContent || "—";
    const pill = $("device-state");
    let pillState = "unknown";
    let pillText = "waiting for the device";
    let icon = "?";
    if (s) {
      if (!s.online) {
        pillState = "offline"; icon = "✖";
        pillText = "OFFLINE" + (s.detail ? " — " + s.detail : "");
      } else if (now - state.statusAt > STATUS_STALE_MS) {
        pillState = "offline"; icon = "✖";
        pillText = "NOT RESPONDING";
      } else if (s.state === "no-signal" || s.state === "error") {
        pillState = "warning"; icon = "!";
        pillText = (s.state === "error" ? "ERROR" : "NO SIGNAL") + (s.detail ? " — " + s.detail : "");
      } else {
        pillState = "online"; icon = "✔";
        pillText = "ONLINE — " + (s.exam_running ? "exam running" : s.state);
      }
    }
    if (!state.connected && state.everConnected) {
      pillState = "offline"; icon = "✖"; pillText = "UNKNOWN — broker connection lost";
    }
    pill.dataset.state = pillState;
    pill.querySelector(".pill-icon").textContent = icon;
    $("device-state-text").textContent = pillText;
    $("exam-id").textContent = state.examId
      ? state.examId + (s && s.online && s.exam_id === state.examId && !s.exam_running ? " (stopped)" : "")
      : "none";

    // Model and the clinical-use banner (from the status, or from the shown result).
    const model = (s && s.model) || (state.result && state.result.model) || null;
    if (model) {
      const hash = (model.hash || "").replace(/^sha256:/, "").slice(0, 12);
      $("model-text").textContent = model.name + " · " + model.quantization + " · " + hash +
        (model.trained ? "" : " · " + (model.training || "untrained").toUpperCase());
    }
    const ncu = !!(model && model.not_for_clinical_use) ||
      !!(state.result && state.result.model && state.result.model.not_for_clinical_use);
    $("not-for-clinical-use").hidden = !ncu;
    $("intended-use").textContent = model && model.intended_use ? model.intended_use : "";

    renderTiming(now, shown);
    renderResult(shown);
    renderPreviewState(now);

    // Replies that do not come: said after a while; a reply that comes later still replaces
    // it, and it is forgotten once off the list.
    for (const [id, e] of state.pending) {
      if (e.outcome === "pending" && now - e.sentAt > REPLY_TIMEOUT_MS) {
        e.outcome = "no-reply";
        e.text = "no reply from the device yet — check its status before sending again";
        renderReplies();
      }
      if (!replies.includes(e)) state.pending.delete(id);
    }
    const canSend = state.connected && !!state.device;
    for (const b of document.querySelectorAll(".controls button")) b.disabled = !canSend;
    $("send-roi").disabled = !(canSend && state.draft);
    $("rescore").disabled = !canSend;
    // The rectangle drawn and not yet sent, else the exam's ROI as the preview shows it.
    const p = state.preview;
    const current = p && p.roi && p.exam_id === state.examId ? p.roi : null;
    $("roi-draft").textContent = state.draft
      ? "drawn: " + roiText(state.draft)
      : current ? "ROI: " + roiText(current) : "no ROI set";
  }

  function renderTiming(now, shown) {
    const t = state.timing;
    const fresh = !!t && shown.ok && now - state.timingAt <= TIMING_STALE_MS && t.exam_id === state.examId;
    const clock = $("clock");
    clock.dataset.fresh = String(fresh);
    const caption = $("clock-caption");
    const source = $("clock-source");
    const hold = $("hold");
    const phase = $("phase");
    if (!fresh) {
      clock.textContent = "—";
      caption.textContent = state.status && state.status.exam_running ? "clock not updating" : "no exam running";
      source.textContent = "";
      source.dataset.estimated = "false";
      phase.textContent = state.status && state.status.exam_running ? "—" : "idle";
      phase.dataset.phase = "unknown";
      hold.textContent = "";
      hold.dataset.hold = "none";
      drawPhaseBar(null);
      return;
    }
    phase.textContent = t.phase;
    phase.dataset.phase = t.phase;
    if (typeof t.elapsed_s === "number") {
      clock.textContent = (t.estimated ? "≈" : "") + Math.floor(t.elapsed_s) + " s";
      caption.textContent = "since injection";
      const sources = { manual: "marked by the operator", recorded: "recorded by the scanner",
        automatic: "ESTIMATED from contrast arrival — mark the injection" };
      source.textContent = sources[t.clock_source] || t.clock_source || "";
      source.dataset.estimated = String(!!t.estimated);
    } else {
      clock.textContent = "—";
      caption.textContent = "injection not known — mark it when you inject";
      source.textContent = "";
      source.dataset.estimated = "false";
    }
    const w = t.window;
    let holdState = "none";
    let text = "";
    if (typeof t.elapsed_s === "number" && w) {
      const toOpen = w.countdown_s;
      if (w.open) {
        holdState = "now";
        text = "HOLD THE PROBE STILL — key frames: " + Math.max(0, Math.ceil(w.end_s - t.elapsed_s)) +
          " s left, " + w.frames_kept + " kept";
      } else if (typeof toOpen === "number" && toOpen > 0) {
        holdState = toOpen <= 10 ? "soon" : "none";
        text = "Hold the probe still in " + Math.ceil(toOpen) + " s";
      } else if (t.elapsed_s >= w.end_s) {
        holdState = "closed";
        text = "Key-frame window closed (" + w.frames_kept + " frames kept)";
      }
    }
    hold.dataset.hold = holdState;
    hold.textContent = text;
    drawPhaseBar(t);
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svgEl(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function drawPhaseBar(t) {
    const bar = $("phase-bar");
    bar.textContent = "";
    const bands = (t && t.phases) || { vascular_end_s: 30, pancreatic_end_s: 60, delayed_end_s: 120 };
    const total = bands.delayed_end_s;
    const x = (s) => (Math.max(0, Math.min(total, s)) / total) * 1000;
    const segs = [
      ["vascular", 0, bands.vascular_end_s, "#1d3b57"],
      ["pancreatic", bands.vascular_end_s, bands.pancreatic_end_s, "#2e5d2e"],
      ["delayed", bands.pancreatic_end_s, bands.delayed_end_s, "#4a3a1d"],
    ];
    for (const [name, a, b, fill] of segs) {
      const current = t && t.phase === name;
      bar.appendChild(svgEl("rect", { x: x(a), y: 0, width: x(b) - x(a), height: 44, fill,
        stroke: current ? "#fff" : "#000", "stroke-width": current ? 4 : 1 }));
      bar.appendChild(svgEl("text", { x: x(a) + 8, y: 28 }, (current ? "▶ " : "") + name));
    }
    if (t && t.window) {
      bar.appendChild(svgEl("rect", { x: x(t.window.start_s), y: 44, width: x(t.window.end_s) - x(t.window.start_s),
        height: 24, fill: "#ffd400" }));
      bar.appendChild(svgEl("text", { x: x(t.window.end_s) + 6, y: 64 }, "key frames " +
        t.window.start_s + "–" + t.window.end_s + " s"));
    }
    if (t && typeof t.elapsed_s === "number") {
      bar.appendChild(svgEl("rect", { x: x(t.elapsed_s) - 3, y: 0, width: 6, height: 70, fill: "#fff" }));
    }
  }

  function renderResult(shown) {
    const r = state.result && state.result.exam_id === state.examId ? state.result : null;
    const box = $("result");
    const body = $("result-body");
    const empty = $("result-empty");
    const withheld = $("result-withheld");
    const img = $("heatmap");
    const note = $("heatmap-note");
    $("result-id").textContent = r ? r.result_id + (r.revision > 1 ? " (rescored)" : "") : "";
    if (!r) {
      box.dataset.state = "none";
      delete box.dataset.resultId;
      body.hidden = true;
      withheld.hidden = true;
      empty.hidden = false;
      empty.textContent = state.examId ? "no result for this exam yet" : "no exam";
      img.hidden = true;
      img.removeAttribute("src");
      delete img.dataset.resultId;
      note.textContent = "";
      return;
    }
    empty.hidden = true;
    if (!shown.ok) {
      box.dataset.state = "withheld";
      delete box.dataset.resultId;
      body.hidden = true;
      withheld.hidden = false;
      withheld.textContent = "Result hidden — " + shown.why;
      img.hidden = true;
      note.textContent = "";
      return;
    }
    box.dataset.state = "current";
    box.dataset.resultId = r.result_id;
    withheld.hidden = true;
    body.hidden = false;
    const scored = typeof r.score === "number";
    $("result-label").textContent = scored ? r.label : "NO SCORE";
    $("result-label").dataset.label = scored ? r.label : "";
    $("result-verdict").textContent = scored
      ? (r.score >= r.threshold ? "at or above" : "below") + " the threshold"
      : "";
    $("result-score").textContent = scored ? "P(" + r.positive_class + ") = " + r.score.toFixed(2) : "";
    $("result-threshold").textContent = "threshold " + r.threshold.toFixed(2);
    drawScoreBar(scored ? r.score : null, r.threshold, r.positive_class, scored ? r.label : null);
    const sp = r.spread || {};
    $("result-spread").textContent = sp.frames_scored > 0
      ? sp.frames_scored + " key frame" + (sp.frames_scored > 1 ? "s" : "") + " scored: median " +
        fmt(sp.median, 2) + ", range " + fmt(sp.min, 2) + "–" + fmt(sp.max, 2)
      : "";
    $("result-roi").textContent = r.roi ? "ROI: " + roiText(r.roi) : "";
    $("result-roi").dataset.roi = r.roi ? JSON.stringify(r.roi) : "";
    $("result-reason").textContent = r.reason ? "No score: " + r.reason : "";
    const warnings = $("result-warnings");
    warnings.textContent = "";
    for (const w of r.warnings || []) {
      const li = document.createElement("li");
      li.textContent = w;
      warnings.appendChild(li);
    }
    const h = state.heatmap;
    if (r.heatmap && h && h.resultId === r.result_id && h.url) {
      if (img.src !== h.url) img.src = h.url;
      img.dataset.resultId = h.resultId;
      img.hidden = false;
      note.textContent = "Grad-CAM of the key frame" + (h.verified === "sha256" ? " (SHA-256 checked)" : "");
    } else {
      img.hidden = true;
      img.removeAttribute("src");
      delete img.dataset.resultId;
      note.textContent = r.heatmap ? "heatmap: waiting" : "no heatmap for this result";
    }
  }

  // The score's bar takes the colour of its side of the threshold, and says which side in words.
  function drawScoreBar(score, threshold, positive, label) {
    const bar = $("score-bar");
    bar.textContent = "";
    bar.appendChild(svgEl("rect", { x: 0, y: 8, width: 1000, height: 24, fill: "#333" }));
    if (score !== null) {
      const above = score >= threshold;
      bar.dataset.side = above ? "above" : "below";
      bar.appendChild(svgEl("rect", { x: 0, y: 8, width: score * 1000, height: 24,
        fill: above ? "#e2574c" : "#4c8de2" }));
      bar.appendChild(svgEl("text", { x: 500, y: 28, "text-anchor": "middle" },
        (above ? "at or above" : "below") + " the threshold: " + label));
    } else {
      delete bar.dataset.side;
    }
    bar.appendChild(svgEl("rect", { x: threshold * 1000 - 3, y: 0, width: 6, height: 40, fill: "#ffd400" }));
    bar.appendChild(svgEl("text", { x: 6, y: 28 }, "0"));
    bar.appendChild(svgEl("text", { x: 994, y: 28, "text-anchor": "end" }, "1 " + positive));
  }

  function renderPreviewState(now) {
    const p = state.preview;
    const note = $("preview-note");
    const age = $("preview-age");
    if (!p) {
      note.hidden = false;
      age.textContent = "";
      return;
    }
    const stale = now - state.previewAt > PREVIEW_STALE_MS || !state.connected;
    note.hidden = !stale;
    note.textContent = stale ? "preview not updating" : "";
    age.textContent = p.exam_id === state.examId && p.panes ? "panes found" : "";
    drawPreview();
  }

  setInterval(render, 500);
  render();
})();
