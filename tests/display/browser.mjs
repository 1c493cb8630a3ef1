// The bedside display in headless Chromium, driven by Playwright, against a real Mosquitto and
// a real `ceusd run` on the synthetic scanner. Started by tests/display.rs, which owns the
// broker and the daemon and passes, in CEUSD_DISPLAY_TEST (JSON):
//   url          the page, served by Mosquitto's websockets listener
//   chromium     the browser executable
//   lesions      the lesion box of each exam of the session, frame pixels
//   daemon_pid   killed here (SIGKILL) to see the page go offline
//   broker_pid   killed here (SIGKILL) to see the page notice the lost connection
//   artifacts    where the screenshots go
//   summary      where the summary (JSON) goes, for the Rust side to check against what the
//                daemon published
// Each step prints a line.
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const spec = JSON.parse(process.env.CEUSD_DISPLAY_TEST || "{}");
mkdirSync(spec.artifacts, { recursive: true });
const started = Date.now();
const say = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${text}`);
const summary = { phases: [], hold: [], screenshots: [] };

const browser = await chromium.launch({
  executablePath: spec.chromium,
  headless: true,
  chromiumSandbox: false,
  // Without these, Chromium reaches for Google's hosts at every start.
  args: ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });

async function shot(name) {
  const path = join(spec.artifacts, name + ".png");
  await page.screenshot({ path });
  summary.screenshots.push(path);
  say(`screenshot ${path}`);
}

async function until(what, fn, arg, timeoutMs = 60000) {
  try {
    await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
  } catch (e) {
    await shot("failed");
    throw new Error(`${what}: not seen within ${timeoutMs / 1000} s (page errors: ${pageErrors.join("; ") || "none"})`);
  }
  say(what);
}

const text = (sel) => page.$eval(sel, (e) => e.textContent);

// Draws an ROI given in frame pixels by dragging on the preview canvas, as a finger would.
async function drawRoi(roi) {
  const fw = Number(await page.$eval("#preview", (c) => c.dataset.frameWidth));
  const fh = Number(await page.$eval("#preview", (c) => c.dataset.frameHeight));
  // Where a frame point is on screen now (read at each step, as an eye would).
  const at = async (x, y) => {
    const box = await page.locator("#preview").boundingBox();
    return [box.x + (x / fw) * box.width, box.y + (y / fh) * box.height, box];
  };
  const [x0, y0] = await at(roi.x, roi.y);
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  for (let i = 1; i <= 8; i++) {
    const [x, y] = await at(roi.x + (roi.width * i) / 8, roi.y + (roi.height * i) / 8);
    await page.mouse.move(x, y);
  }
  const [, , box] = await at(0, 0);
  await page.mouse.up();
  const drawn = await text("#roi-draft");
  say(`drew ${JSON.stringify(roi)}: page says "${drawn}"`);
  const m = drawn.match(/(\d+)×(\d+) at (\d+),(\d+)/);
  if (!m) {
    await shot("failed-roi");
    throw new Error(`no ROI drawn: "${drawn}"`);
  }
  const got = { x: +m[3], y: +m[4], width: +m[1], height: +m[2] };
  // A canvas pixel is frame.width / image.width frame pixels: the drawing lands within one.
  const tolerance = Math.ceil(fw / box.width) + 1;
  for (const k of ["x", "y", "width", "height"]) {
    if (Math.abs(got[k] - roi[k]) > tolerance) {
      throw new Error(`drawn ROI ${JSON.stringify(got)} is not the intended ${JSON.stringify(roi)}`);
    }
  }
  return got;
}

// Clicks a control and waits for its reply line (the newest line for that command).
async function commandReply(button, label, outcome) {
  await page.click(button);
  await until(`${label}: reply ${outcome}`, ([label, outcome]) => {
    const li = [...document.querySelectorAll("#replies li")].find((l) => l.textContent.includes(label));
    return li && li.dataset.outcome === outcome;
  }, [label, outcome], 45000);
  const line = await page.$$eval("#replies li", (ls, label) => ls.find((l) => l.textContent.includes(label)).textContent, label);
  say(`  "${line}"`);
  return line;
}

// Records the phases and the hold-still states the page shows, every 100 ms, until `stop()`.
const watchers = new Set();
function watchPhases() {
  const watcher = { on: true };
  watchers.add(watcher);
  const loop = (async () => {
    while (watcher.on) {
      const phase = await text("#phase").catch(() => null);
      const hold = await page.$eval("#hold", (e) => e.dataset.hold).catch(() => null);
      if (phase && summary.phases[summary.phases.length - 1] !== phase) summary.phases.push(phase);
      if (hold && summary.hold[summary.hold.length - 1] !== hold) {
        summary.hold.push(hold);
        if (hold === "now" && !summary.screenshots.some((s) => s.endsWith("hold-still.png"))) {
          await shot("hold-still");
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return async () => { watcher.on = false; await loop; };
}

const currentResult = () => page.$eval("#result", (e) => ({
  state: e.dataset.state,
  id: e.dataset.resultId || null,
  label: document.getElementById("result-label").textContent,
  roi: document.getElementById("result-roi").dataset.roi || null,
  roiText: document.getElementById("result-roi").textContent,
  side: document.getElementById("score-bar").dataset.side || null,
  heatmapFor: document.getElementById("heatmap").dataset.resultId || null,
  heatmapLoaded: (() => { const i = document.getElementById("heatmap"); return !i.hidden && i.complete && i.naturalWidth > 0; })(),
}));

async function waitForResult(label, revision) {
  await until(`result ${label} r${revision} shown with its heatmap`, ([label, revision]) => {
    const box = document.getElementById("result");
    const img = document.getElementById("heatmap");
    return box.dataset.state === "current" &&
      (box.dataset.resultId || "").endsWith("-r" + revision) &&
      document.getElementById("result-label").textContent === label &&
      !img.hidden && img.complete && img.naturalWidth > 0 &&
      img.dataset.resultId === box.dataset.resultId;
  }, [label, revision], 90000);
  return currentResult();
}

// `ceusd demo` serves the page itself, with its embedded broker's WebSockets listener: the
// page connects, follows the demo's first exam and shows its result with the heatmap.
async function demoScenario() {
  await page.goto(spec.url);
  await until("connected to the demo's broker", () => document.getElementById("connection").dataset.state === "connected");
  await until("demo device online", () => document.getElementById("device-state").dataset.state === "online");
  await until("preview with the scanner's panes", () => document.getElementById("preview-age").textContent === "panes found");
  summary.demo_result = await waitForResult("PDAC", 1);
  await shot("demo-result");
  summary.page_errors = pageErrors;
}

try {
  if (spec.scenario === "demo") {
    await demoScenario();
  } else {
    await fullScenario();
  }
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  Object.assign(summary, { error: String(e), page_errors: pageErrors });
  process.exitCode = 1;
} finally {
  for (const w of watchers) w.on = false;
  writeFileSync(spec.summary, JSON.stringify(summary, null, 1));
  await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10000))]);
  process.exit();
}

async function fullScenario() {
  await page.goto(spec.url);
  await until("connected to the broker", () => document.getElementById("connection").dataset.state === "connected");
  await until("device online", () => document.getElementById("device-state").dataset.state === "online");
  await until("first exam running", () => document.getElementById("exam-id").textContent !== "none");
  const examA = await text("#exam-id");
  summary.exam_a = examA;
  summary.not_for_clinical_use = await page.isVisible("#not-for-clinical-use");
  summary.model = await text("#model-text");
  say(`exam ${examA}; model "${summary.model}"; not-for-clinical-use banner: ${summary.not_for_clinical_use}`);
  const stopWatching = watchPhases();

  // The operator draws the lesion's ROI on the preview before the window.
  await until("preview with the scanner's panes", () => document.getElementById("preview-age").textContent === "panes found");
  summary.roi_a = await drawRoi(spec.lesions[0]);
  await commandReply("#send-roi", "Set ROI", "ok");
  await shot("roi-drawn");

  const a1 = await waitForResult("PDAC", 1);
  summary.result_a1 = a1;
  await shot("pdac-result");
  await stopWatching();

  // A mark after the exam was scored is refused; the page shows why.
  summary.mark_reply = await commandReply("button.mark[data-ago='0']", "Mark injection (now)", "refused");
  // A second start while the exam runs is refused too.
  summary.start_reply = await commandReply("#start-exam", "Start exam", "refused");

  // Rescore with a larger ROI drawn on the preview.
  const l = spec.lesions[0];
  const bigger = { x: l.x - 12, y: l.y - 12, width: l.width + 24, height: l.height + 24 };
  summary.rescore_roi = await drawRoi(bigger);
  summary.rescore_reply = await commandReply("#rescore", "Rescore", "ok");
  const a2 = await waitForResult("PDAC", 2);
  summary.result_a2 = a2;
  if (a2.roi !== JSON.stringify(summary.rescore_roi)) {
    throw new Error(`the rescored result's ROI ${a2.roi} is not the drawn ${JSON.stringify(summary.rescore_roi)}`);
  }
  await shot("pdac-rescored");

  summary.stop_reply = await commandReply("#stop-exam", "Stop exam", "ok");

  // The recording's next exam starts: the screen clears at once.
  await until("second exam running", (a) => {
    const id = document.getElementById("exam-id").textContent;
    return id !== "none" && !id.startsWith(a);
  }, examA, 90000);
  summary.exam_b = await text("#exam-id");
  summary.after_new_exam = await currentResult();
  if (summary.after_new_exam.state !== "none" || summary.after_new_exam.heatmapLoaded) {
    throw new Error(`the new exam's screen still shows ${JSON.stringify(summary.after_new_exam)}`);
  }
  await shot("new-exam-cleared");
  const stopWatchingB = watchPhases();
  await until("preview of the new exam's panes", () => document.getElementById("preview-age").textContent === "panes found");
  summary.roi_b = await drawRoi(spec.lesions[1]);
  await commandReply("#send-roi", "Set ROI", "ok");
  summary.result_b1 = await waitForResult("CP", 1);
  await shot("cp-result");
  await stopWatchingB();

  // The daemon vanishes: the broker publishes its last will and the result is withheld.
  process.kill(spec.daemon_pid, "SIGKILL");
  const killedAt = Date.now();
  await until("device offline after SIGKILL", () =>
    document.getElementById("device-state").dataset.state === "offline" &&
    document.getElementById("result").dataset.state === "withheld", undefined, 60000);
  summary.offline_after_s = (Date.now() - killedAt) / 1000;
  summary.offline_text = await text("#device-state-text");
  summary.withheld_text = await text("#result-withheld");
  await shot("daemon-offline");

  // The broker vanishes: the page says so.
  process.kill(spec.broker_pid, "SIGKILL");
  const brokerKilledAt = Date.now();
  await until("broker connection lost", () => !document.getElementById("connection-lost").hidden, undefined, 30000);
  summary.broker_lost_after_s = (Date.now() - brokerKilledAt) / 1000;
  summary.broker_lost_text = await text("#connection-lost-text");
  await shot("broker-lost");

  summary.page_errors = pageErrors;
}
