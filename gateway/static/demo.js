/**
 * The demo page: live microphone streaming with dataflow-gateway.js, file upload to
 * POST /v1/recognize with streamed (NDJSON) progress, transcripts, errors and a raw event log.
 */
import { GatewayError, StreamClient } from "./dataflow-gateway.js";

const $ = (id) => document.getElementById(id);
const LOG_LIMIT = 500;
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
const ERROR_LIMIT = 5;

/** Per-channel transcript: partials replaced in place, finals appended, speech activity. */
class TranscriptView {
  /** @param {HTMLElement} root */
  constructor(root) {
    this.root = root;
    this.channels = new Map();
  }

  clear() {
    this.root.replaceChildren();
    this.channels.clear();
  }

  channel(n) {
    let view = this.channels.get(n);
    if (view) return view;
    const section = document.createElement("section");
    section.className = "channel";
    section.dataset.channel = String(n);
    const heading = document.createElement("h3");
    const activity = document.createElement("span");
    activity.className = "channel-activity";
    activity.setAttribute("aria-hidden", "true");
    heading.append(`Channel ${n} `, activity);
    const finals = document.createElement("ol");
    finals.className = "finals";
    const partial = document.createElement("p");
    partial.className = "partial";
    partial.setAttribute("aria-hidden", "true"); // changes too often to announce; finals are announced
    section.append(heading, finals, partial);
    const after = [...this.channels.keys()].filter((k) => k > n).sort((a, b) => a - b)[0];
    this.root.insertBefore(section, after === undefined ? null : this.channels.get(after).section);
    view = { n, section, activity, finals, partial };
    this.channels.set(n, view);
    return view;
  }

  /** @param {{name: string, channel: number, final: boolean, text: string | null}} event */
  show(event) {
    const channel = Math.max(event.channel, 0);
    if (event.name === "Speech Started" || event.name === "Speech Ended") {
      const view = this.channel(channel);
      view.activity.textContent = event.name === "Speech Started" ? "speaking" : "";
    } else if (event.final && typeof event.text === "string") {
      const view = this.channel(channel);
      view.partial.textContent = "";
      if (event.text) {
        const item = document.createElement("li");
        item.textContent = event.text;
        view.finals.append(item);
      }
    } else if (event.name === "SR Partial" && typeof event.text === "string") {
      this.channel(channel).partial.textContent = event.text;
    }
  }

  /** The session is over: nobody is speaking any more. */
  idle() {
    for (const view of this.channels.values()) view.activity.textContent = "";
  }

  /** The upload's final transcript when no final event carried it. @param {Record<string, string>} transcript */
  result(transcript) {
    for (const [channel, text] of Object.entries(transcript)) {
      const view = this.channel(Number(channel));
      if (text && !view.finals.childElementCount) this.show({ name: "result", channel: view.n, final: true, text });
    }
  }
}

// --- errors, status, log -----------------------------------------------------------------------------

const shown = new WeakSet();

/** @param {unknown} error */
function showError(error) {
  if (typeof error === "object" && error !== null) {
    if (shown.has(error)) return;
    shown.add(error);
  }
  const { code = "error", message = String(error), retryable = false } = /** @type {any} */ (error);
  const item = document.createElement("p");
  const strong = document.createElement("strong");
  strong.textContent = code.replaceAll("_", " ");
  const sentence = /[.!?]$/.test(message) ? message : `${message}.`;
  item.append(strong, `: ${sentence}`, retryable ? " You can try again." : "");
  item.dataset.code = code;
  const box = $("errors");
  box.append(item);
  while (box.childElementCount > ERROR_LIMIT) box.firstElementChild.remove();
  $("clear-errors").hidden = false;
}

function clearErrors() {
  $("errors").replaceChildren();
  $("clear-errors").hidden = true;
}

/** @param {string} source @param {unknown} message */
function log(source, message) {
  const list = $("log");
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toISOString().slice(11, 23);
  const text = JSON.stringify(message);
  item.append(time, ` ${source} `, text.length > 2000 ? `${text.slice(0, 2000)}…` : text);
  list.append(item);
  while (list.childElementCount > LOG_LIMIT) list.firstElementChild.remove();
  $("log-count").textContent = String(list.childElementCount);
}

function setActivity(speaking) {
  const activity = $("activity");
  if (speaking) activity.dataset.count = String(Number(activity.dataset.count) + 1);
  activity.dataset.state = speaking ? "speech" : "silence";
  $("activity-text").textContent = speaking ? "Speech" : "No speech";
}

// --- live microphone ---------------------------------------------------------------------------------

const live = new TranscriptView($("live-transcript"));
/** @type {StreamClient | null} */
let client = null;

function setRunning(running) {
  $("start").disabled = running;
  $("finalize").disabled = !running;
  $("cancel").disabled = !running;
  $("project").disabled = running;
  $("token").disabled = running;
  $("interim").disabled = running;
  $("fault").disabled = running;
}

async function startLive() {
  clearErrors();
  live.clear();
  $("live-flow").textContent = "";
  setRunning(true);
  const status = $("live-status");
  status.textContent = "Asking for the microphone…";
  const fault = $("fault").value;
  const session = new StreamClient("/v1/stream", {
    project: $("project").value.trim() || undefined,
    token: $("token").value.trim() || undefined, // an API key or browser token, offered in the handshake
    interim: $("interim").checked,
    settings: fault ? { SimulatorFault: fault } : undefined,
  });
  client = session;
  let failed = false;
  let starting = true; // until startMicrophone settles, Cancel must stay usable (the microphone may be opening)
  session.on("message", (message) => log("stream", message));
  session.on("error", (error) => {
    failed = true;
    showError(error);
  });
  session.on("level", ({ rms }) => { $("level").value = Math.max(0, 60 + 20 * Math.log10(rms + 1e-9)); });
  session.on("event", (event) => {
    live.show(event);
    if (event.name === "Speech Started") setActivity(true);
    if (event.name === "Speech Ended") setActivity(false);
  });
  session.on("ack", (ack) => {
    const paused = ack.paused ? " (paused: Data Flow is not keeping up)" : "";
    const received = `${seconds(ack.audioMs)} of audio received by the gateway`;
    $("live-flow").textContent = `${received}, ${ack.bufferedMs} ms buffered${paused}.`;
  });
  session.on("closed", ({ code, reason, audioMs }) => {
    const audio = audioMs === null ? "" : `, ${seconds(audioMs)} of audio`;
    status.textContent = `Session closed: ${reason} (code ${code}${audio}).`;
    if (code !== 1000 && !failed) {
      showError(new GatewayError(reason, `The session ended unexpectedly (close code ${code}).`, code !== 1008));
    }
    $("level").value = 0;
    setActivity(false);
    $("activity").dataset.state = "idle";
    live.idle();
    if (client !== session || starting) return;
    setRunning(false);
    const focused = document.activeElement;
    if (!focused || focused === document.body || focused.disabled) $("start").focus(); // keep keyboard users in place
  });
  try {
    const started = await session.startMicrophone();
    const { audio, upstreamAudio } = started;
    const upstream = `Data Flow receives ${upstreamAudio.encoding} at ${upstreamAudio.sampleRate} Hz`;
    status.textContent = `Streaming ${audio.encoding} at ${audio.sampleRate} Hz; ${upstream}.`;
    $("finalize").focus();
  } catch (error) {
    const cancelled = error instanceof GatewayError && error.code === "closed" && !failed;
    if (!cancelled) showError(error);
    status.textContent = cancelled ? "Cancelled." : "Could not start.";
    if (client === session) setRunning(false);
  } finally {
    starting = false;
  }
}

// --- file upload -------------------------------------------------------------------------------------

const upload = new TranscriptView($("upload-transcript"));

/** Parse a fetch body of newline-delimited JSON. @param {ReadableStream<Uint8Array>} body */
async function* ndjson(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) yield JSON.parse(line);
    }
  }
  if (buffer.trim()) yield JSON.parse(buffer);
}

/** @param {Response} response */
async function httpError(response) {
  const body = await response.json().catch(() => null);
  const error = body && body.error;
  if (error && error.code) return new GatewayError(error.code, error.message, Boolean(error.retryable));
  const { status, statusText } = response;
  return new GatewayError(`http_${status}`, `The gateway answered ${status} ${statusText}.`, status >= 500);
}

/** @param {File} file */
function uploadHeaders(file) {
  const headers = { "Content-Type": file.type || "application/octet-stream", Accept: "application/x-ndjson" };
  const token = $("token").value.trim();
  return token ? { ...headers, Authorization: `Bearer ${token}` } : headers;
}

/** @param {File} file */
async function recognise(file) {
  clearErrors();
  upload.clear();
  const progress = $("upload-progress");
  const status = $("upload-status");
  progress.max = Math.max(file.size, 1);
  progress.value = 0;
  status.textContent = `Sending ${file.name}…`;
  $("upload").disabled = true;
  try {
    const response = await fetch("/v1/recognize", {
      method: "POST",
      body: file,
      headers: uploadHeaders(file),
    });
    if (!response.ok || !response.body) throw await httpError(response);
    let finished = false;
    for await (const message of ndjson(response.body)) {
      log("upload", message);
      if (message.type === "event") upload.show(message);
      else if (message.type === "progress") {
        progress.value = message.bytes;
        status.textContent = `Processing: ${Math.round(message.bytes / 1024)} KiB read, ${seconds(message.audioMs)} of audio.`;
      } else if (message.type === "result") {
        finished = true;
        progress.value = progress.max;
        upload.result(message.transcript || {});
        status.textContent = `Done: ${seconds(message.audioMs)} of audio recognised.`;
      } else if (message.type === "warning") {
        showError(new GatewayError(message.code, message.message, false)); // not fatal: the upload goes on
      } else if (message.type === "error") {
        finished = true;
        throw new GatewayError(message.code, message.message, Boolean(message.retryable));
      }
    }
    if (!finished) throw new GatewayError("incomplete_response", "The response ended before the result.", true);
  } catch (error) {
    const network = error instanceof TypeError; // fetch's way of saying the connection failed
    showError(network ? new GatewayError("network_error", `The upload failed: ${error.message}`, true) : error);
    status.textContent = "Upload failed.";
  } finally {
    $("upload").disabled = false;
  }
}

// --- wiring ------------------------------------------------------------------------------------------

const simulatorMode = document.body.dataset.simulatorMode === "true";
$("simulator-note").hidden = !simulatorMode;
$("fault-field").hidden = !simulatorMode;
$("live-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startLive();
});
$("finalize").addEventListener("click", () => {
  $("live-status").textContent = "Finishing: waiting for the last results…";
  $("finalize").disabled = true;
  client?.finalize();
});
$("cancel").addEventListener("click", () => client?.stop());
$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (file) recognise(file);
});
$("clear-errors").addEventListener("click", clearErrors);
$("clear-log").addEventListener("click", () => {
  $("log").replaceChildren();
  $("log-count").textContent = "0";
});
document.body.dataset.ready = "true";
