/**
 * dataflow-gateway.js: a dependency-free browser client for dataflow-gateway's `/v1/stream`.
 * Copy it with `capture-worklet.js`, which must sit beside it, and import it as an ES module.
 *
 * Audio format, chosen deliberately: an AudioWorklet reads the microphone in an AudioContext at
 * its default (device) rate, at most 48 kHz, and the client sends little-endian pcm16 mono at that
 * rate; the gateway resamples with soxr. Nothing is resampled in the browser: decimating in
 * JavaScript aliases, and some browsers (older Firefox) refuse to connect a microphone to an
 * AudioContext created at another rate. pcm16 is half of f32's bytes and loses nothing that matters,
 * since Data Flow receives 16-bit audio anyway (`microphone: {encoding: "f32"}` is available).
 *
 * @example
 * const client = new StreamClient("/v1/stream", { project: "demo" });
 * client.on("event", (e) => e.final && console.log(e.channel, e.text));
 * await client.startMicrophone();
 * const { reason } = await client.finalize();
 */

/** URL of the AudioWorklet processor, next to this module. */
export const DEFAULT_WORKLET_URL = new URL("./capture-worklet.js", import.meta.url).href;
const MAX_SAMPLE_RATE = 48000;
/** The subprotocol the gateway echoes; browsers fail a handshake whose answer names none of those offered. */
export const SUBPROTOCOL = "dataflow-gateway.v1";
/** Audio per WebSocket message at most: far below the gateway's message limit (1 MiB by default, 1009 past it). */
const MAX_AUDIO_MESSAGE_BYTES = 64 * 1024;
const BYTES_PER_SAMPLE = { pcm16: 2, f32: 4, mulaw: 1, alaw: 1 };
/** Characters a subprotocol may hold (an HTTP token); anything else makes `new WebSocket` throw. */
const PROTOCOL_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const MAX_CLOSE_REASON_BYTES = 123;

/** An error from the gateway (its `error` message) or detected by this client. */
export class GatewayError extends Error {
  /**
   * @param {string} code machine-readable, e.g. "upstream_unavailable", "microphone_denied"
   * @param {string} message human-readable
   * @param {boolean} [retryable] whether trying again later may succeed
   */
  constructor(code, message, retryable = false) {
    super(message);
    this.name = "GatewayError";
    this.code = code;
    this.retryable = retryable;
  }
}

/**
 * @typedef {object} MicrophoneOptions
 * @property {"pcm16" | "f32"} [encoding="pcm16"] what is sent
 * @property {number} [frameMs=20] audio per WebSocket message
 * @property {string} [deviceId] one of navigator.mediaDevices.enumerateDevices()
 * @property {boolean} [processing=false] the browser's echo cancellation, noise suppression and gain
 *   control; off by default because recognisers want the unprocessed signal
 * @property {string} [workletUrl] where capture-worklet.js is served
 */

const MICROPHONE_ERRORS = {
  NotAllowedError: ["microphone_denied",
    "Microphone access was denied. Allow it for this site in the browser's settings, then try again."],
  SecurityError: ["microphone_denied", "Microphone access is blocked here (the page needs https:// or localhost)."],
  NotFoundError: ["microphone_not_found", "No microphone was found."],
  OverconstrainedError: ["microphone_not_found", "The chosen microphone was not found."],
  NotReadableError: ["microphone_busy", "The microphone could not be opened (in use by another application?)."],
};

/** Microphone capture through an AudioWorklet; each frame goes to `onframe`. */
export class Microphone {
  /** @type {((frame: {audio: ArrayBuffer, rms: number, peak: number}) => void) | null} */
  onframe = null;
  /** @type {(() => void) | null} called when the device goes away (unplugged, permission revoked) */
  onended = null;
  #stopped = false;

  /** Use {@link Microphone.open}. */
  constructor(stream, context, node, encoding) {
    this.stream = stream;
    this.context = context;
    this.node = node;
    /** The `start.audio` to declare. */
    this.format = { encoding, sampleRate: context.sampleRate, channels: 1 };
    node.port.onmessage = (message) => this.onframe?.(message.data);
    for (const track of stream.getAudioTracks()) track.onended = () => this.onended?.();
  }

  /** Ask for the microphone and start capturing. @param {MicrophoneOptions} [options] */
  static async open(options = {}) {
    const { encoding = "pcm16", frameMs = 20, deviceId, processing = false } = options;
    if (!globalThis.navigator?.mediaDevices?.getUserMedia) {
      const why = "This page cannot use a microphone: it needs https:// (or localhost) and getUserMedia.";
      throw new GatewayError("microphone_unavailable", why);
    }
    const audio = { channelCount: 1, echoCancellation: processing, noiseSuppression: processing,
      autoGainControl: processing, ...(deviceId && { deviceId: { exact: deviceId } }) };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio });
    } catch (error) {
      const [code, message] = MICROPHONE_ERRORS[error?.name] ?? ["microphone_failed", `No microphone: ${error}`];
      throw new GatewayError(code, message, code === "microphone_busy");
    }
    let context;
    try {
      context = new AudioContext({ latencyHint: "interactive" });
      if (context.sampleRate > MAX_SAMPLE_RATE) { // the gateway takes 8-48 kHz; let the browser resample once
        await context.close();
        context = new AudioContext({ latencyHint: "interactive", sampleRate: MAX_SAMPLE_RATE });
      }
      await context.audioWorklet.addModule(options.workletUrl ?? DEFAULT_WORKLET_URL);
      const frameSamples = Math.round((context.sampleRate * frameMs) / 1000);
      const node = new AudioWorkletNode(context, "dataflow-capture", {
        numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: "explicit",
        channelInterpretation: "speakers", processorOptions: { frameSamples, encoding },
      });
      context.createMediaStreamSource(stream).connect(node);
      await context.resume();
      return new Microphone(stream, context, node, encoding);
    } catch (error) {
      for (const track of stream.getTracks()) track.stop();
      context?.close().catch(() => {});
      throw new GatewayError("microphone_failed", `Audio capture could not start: ${error}`);
    }
  }

  /** Stop capturing and release the device. Safe to call more than once. */
  stop() {
    if (this.#stopped) return;
    this.#stopped = true;
    this.onframe = null;
    this.node.port.postMessage("stop");
    this.node.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
    this.context.close().catch(() => {});
  }
}

/**
 * @typedef {object} StreamOptions
 * @property {string} [project] Data Flow project (default: the gateway's default project)
 * @property {string} [language] e.g. "en-US"
 * @property {Record<string, unknown>} [settings] Data Flow settings for Start
 * @property {string[]} [channelTags] e.g. ["customer", "agent"]
 * @property {Record<string, unknown>} [callProperties]
 * @property {boolean} [interim=true] receive SR Partial events
 * @property {boolean} [raw=false] add Data Flow's original event as `raw` to each event
 * @property {string} [token] credential for the gateway (a browser token or an API key)
 * @property {"protocol" | "start"} [tokenIn="protocol"] where the token rides: "protocol" offers it in the
 *   handshake as the subprotocol `bearer.<token>` (beside `dataflow-gateway.v1`), so the connection is
 *   authenticated from its first byte; "start" sends it in the start message instead (the connection then
 *   waits, without a credential, in the gateway's small pool of such connections until the start arrives)
 * @property {string | string[]} [protocols] WebSocket subprotocols (`dataflow-gateway.v1` is added to a
 *   `bearer.` one)
 * @property {number} [keepaliveMs=15000] ping period (keeps an idle session open); 0: off
 * @property {number} [maxBufferedBytes=4194304] audio queued in the socket before frames are dropped
 * @property {MicrophoneOptions} [microphone] for {@link StreamClient#startMicrophone}
 */

/**
 * @typedef {object} CloseInfo
 * @property {number} code WebSocket close code (1000 normal, 1011 Data Flow failed, ... see the README)
 * @property {string} reason the gateway's `closed.reason` ("finalized", ...), the close frame's reason, or this
 *   client's: "connection_lost", "connect_refused", "connect_failed", "closed", "not_started"
 * @property {number | null} audioMs audio the gateway received, if it said goodbye
 */

/**
 * One `/v1/stream` session. Listen with {@link StreamClient#on} or iterate with `for await`.
 * Listener types: "started", "event", "response", "ack", "pong" (the gateway's messages), "error"
 * (a GatewayError), "closed" (a CloseInfo, exactly once), "audio" (ArrayBuffer from Data Flow),
 * "level" ({rms, peak} per microphone frame) and "message" (every JSON message, errors included).
 */
export class StreamClient {
  /** @type {WebSocket | null} */ #ws = null;
  /** @type {Map<string, Set<Function>>} */ #listeners = new Map();
  /** @type {Microphone | null} */ #microphone = null;
  /** @type {ArrayBuffer[]} audio captured while the socket was connecting */ #early = [];
  #earlyBytes = 0;
  #startSent = false;
  #opened = false; // the handshake completed: a close before it is a refusal, not a lost connection
  #frameBytes = 1; // bytes per sample frame of the declared format: audio is split on its boundaries
  #ending = false;
  /** @type {"finalize" | "stop" | null} asked for while connecting: sent after start and the held audio */
  #pendingEnd = null;
  #closeRequested = false; // this side closed: the close that follows is no lost connection
  #keepalive = 0;
  #pings = 0;
  #pendingStart = null;
  #goodbye = null;
  /** @type {CloseInfo | null} */ #closedInfo = null;
  #resolveClosed = (/** @type {CloseInfo} */ _info) => {};

  /**
   * @param {string} [url] the gateway's `/v1/stream`; relative and http(s) URLs are accepted
   * @param {StreamOptions} [options]
   */
  constructor(url = "/v1/stream", options = {}) {
    const target = new URL(url, globalThis.location?.href);
    target.protocol = target.protocol.replace(/^http/, "ws");
    this.url = target.href;
    this.options = { interim: true, raw: false, keepaliveMs: 15000, maxBufferedBytes: 4 << 20, ...options };
    /** @type {Promise<CloseInfo>} resolves when the socket has closed; never rejects */
    this.closed = new Promise((resolve) => { this.#resolveClosed = resolve; });
    /** The `started` message ({sessionId, dataflowSessionId, audio, upstreamAudio}), once running. */
    this.started = null;
    /** Audio bytes dropped because the socket could not keep up (see maxBufferedBytes). */
    this.droppedBytes = 0;
  }

  /** Add a listener; returns a function that removes it. @param {string} type @param {Function} listener */
  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.#listeners.get(type)?.delete(listener);
  }

  /**
   * Connect and send `start`; resolves with the `started` message, rejects with a GatewayError.
   * @param {{encoding: "pcm16" | "f32" | "mulaw" | "alaw", sampleRate: number, channels: number}} audio
   */
  start(audio) {
    if (this.#closedInfo || this.#ending || this.#closeRequested) {
      return Promise.reject(new GatewayError("closed", "This client was closed; create a new StreamClient."));
    }
    if (this.#ws) return Promise.reject(new GatewayError("already_started", "start() was already called."));
    const { project, language, settings, channelTags, callProperties, interim, raw } = this.options;
    const { protocols, token } = this.#credentials();
    const channels = Number(audio?.channels) || 1;
    this.#frameBytes = (BYTES_PER_SAMPLE[audio?.encoding] ?? 1) * channels;
    let ws;
    try {
      ws = new WebSocket(this.url, protocols);
    } catch (cause) {
      // Mixed content (an https page, a ws:// URL), a malformed URL or subprotocol: nothing was sent.
      const error = new GatewayError("connect_failed", `The connection could not be opened: ${cause?.message ?? cause}`);
      this.#finish(1006, "connect_failed", error);
      return Promise.reject(error);
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    ws.onopen = () => {
      this.#opened = true;
      const start = { project, audio, language, settings, channelTags, callProperties, interim, raw, token };
      this.#send({ type: "start", ...start });
      this.#startSent = true;
      // Audio accepted while connecting, then a finalize/stop asked for meanwhile, in the order given.
      for (const bytes of this.#early.splice(0)) this.#transmit(bytes);
      this.#earlyBytes = 0;
      if (this.#pendingEnd) this.#send({ type: this.#pendingEnd });
      if (this.options.keepaliveMs > 0) this.#keepalive = setInterval(() => this.ping(), this.options.keepaliveMs);
    };
    ws.onmessage = (message) => this.#receive(message.data);
    ws.onclose = (event) => this.#finish(event.code, event.reason);
    return new Promise((resolve, reject) => { this.#pendingStart = { resolve, reject }; });
  }

  /**
   * Ask for the microphone, then start the session in its format and stream it.
   * @param {MicrophoneOptions} [options] merged over `options.microphone`
   */
  async startMicrophone(options = {}) {
    if (this.#closedInfo || this.#ending || this.#closeRequested) {
      throw new GatewayError("closed", "This client was closed; create a new StreamClient.");
    }
    const microphone = await Microphone.open({ ...this.options.microphone, ...options });
    if (this.#closedInfo || this.#ending || this.#closeRequested) {
      // finalize()/stop()/close() came while the browser asked for the microphone: release it, open nothing.
      microphone.stop();
      throw new GatewayError("closed", "The client was closed while the microphone was being opened.");
    }
    this.#microphone = microphone;
    microphone.onframe = ({ audio, rms, peak }) => {
      this.#emit("level", { rms, peak });
      this.sendAudio(audio);
    };
    microphone.onended = () => {
      this.#error(new GatewayError("microphone_ended", "The microphone stopped (unplugged or permission revoked)."));
      this.finalize();
    };
    try {
      return await this.start(microphone.format);
    } catch (error) {
      microphone.stop();
      throw error;
    }
  }

  /**
   * Send audio in the declared format, in any size (sent as messages of at most 64 KiB, split between
   * samples); false if it was not sent. @param {ArrayBuffer | ArrayBufferView} data
   */
  sendAudio(data) {
    const ws = this.#ws;
    if (this.#ending || !ws || ws.readyState > WebSocket.OPEN) return false;
    const queued = this.#startSent ? ws.bufferedAmount : this.#earlyBytes;
    if (queued + data.byteLength > this.options.maxBufferedBytes) {
      this.droppedBytes += data.byteLength;
      return false;
    }
    const bytes = ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);
    if (this.#startSent) this.#transmit(bytes);
    else {
      this.#early.push(bytes);
      this.#earlyBytes += bytes.byteLength;
    }
    return true;
  }

  /** Stop the microphone; the gateway delivers every final result, then closes (1000). */
  finalize() {
    return this.#end("finalize");
  }

  /** Stop the microphone and drop work in progress; the gateway closes (1000). */
  stop() {
    return this.#end("stop");
  }

  /** Merge settings into the running session (answered by a "response"). @param {Record<string, unknown>} settings */
  update(settings) {
    this.#send({ type: "update", settings });
  }

  /** Send a custom event to Data Flow. @param {Record<string, unknown>} event e.g. {Name: "TTS Request"} */
  sendEvent(event) {
    this.#send({ type: "event", event });
  }

  /** Send a ping (answered by a "pong"); also keeps an idle session open. */
  ping() {
    this.#send({ type: "ping", id: ++this.#pings });
  }

  /**
   * Close the socket now; the gateway cancels the upstream session. Browsers send only 1000 and
   * 3000-4999 (any other code becomes 1000) and a reason of at most 123 UTF-8 bytes (cut to fit).
   */
  close(code = 1000, reason = "") {
    this.#closeRequested = true;
    this.#microphone?.stop();
    const allowed = code === 1000 || (Number.isInteger(code) && code >= 3000 && code <= 4999);
    const closeCode = allowed ? code : 1000;
    const closeReason = utf8Prefix(String(reason ?? ""), MAX_CLOSE_REASON_BYTES);
    if (!this.#ws) this.#finish(closeCode, closeReason || "not_started");
    else if (this.#ws.readyState <= WebSocket.OPEN) {
      try {
        this.#ws.close(closeCode, closeReason);
      } catch {
        this.#ws.close(1000); // whatever the browser refused, the socket must still close
      }
    }
    return this.closed;
  }

  /** Every JSON message from the gateway, in order, until the socket closes. */
  async *[Symbol.asyncIterator]() {
    const queue = [];
    let wake = () => {};
    const offMessage = this.on("message", (message) => { queue.push(message); wake(); });
    const offClosed = this.on("closed", () => wake());
    try {
      while (queue.length || !this.#closedInfo) {
        if (queue.length) yield queue.shift();
        else await new Promise((resolve) => { wake = resolve; });
      }
    } finally {
      offMessage();
      offClosed();
    }
  }

  #end(kind) {
    this.#microphone?.stop();
    if (this.#ending) return this.closed;
    this.#ending = true;
    if (!this.#ws) this.close(); // never connected: nothing to finish
    else if (this.#startSent) this.#send({ type: kind });
    else this.#pendingEnd = kind; // connecting: the audio already accepted is sent first, on open
    return this.closed;
  }

  /** The subprotocols to offer and the token for the start message (null when it rides in the handshake). */
  #credentials() {
    const { protocols, token, tokenIn = "protocol" } = this.options;
    const offered = typeof protocols === "string" ? [protocols] : [...(protocols ?? [])];
    let startToken = token;
    // A token in the handshake: the gateway never holds the connection waiting for a credential. One a
    // subprotocol cannot carry (not an HTTP token) goes in the start message, to be refused there.
    if (token && tokenIn !== "start" && PROTOCOL_TOKEN.test(`bearer.${token}`)) {
      offered.push(`bearer.${token}`);
      startToken = undefined;
    }
    // Without it the gateway answers with no subprotocol and the browser fails the handshake.
    if (offered.some((p) => String(p).startsWith("bearer.")) && !offered.includes(SUBPROTOCOL)) {
      offered.unshift(SUBPROTOCOL);
    }
    return { protocols: offered.length ? offered : undefined, token: startToken };
  }

  /** Send audio as messages of at most 64 KiB, each a whole number of sample frames. @param {Uint8Array} bytes */
  #transmit(bytes) {
    const ws = this.#ws;
    if (ws?.readyState !== WebSocket.OPEN) return;
    const step = Math.max(this.#frameBytes, MAX_AUDIO_MESSAGE_BYTES - (MAX_AUDIO_MESSAGE_BYTES % this.#frameBytes));
    if (bytes.byteLength <= step) return ws.send(bytes);
    for (let at = 0; at < bytes.byteLength; at += step) ws.send(bytes.subarray(at, at + step));
  }

  #send(message) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(message));
  }

  #receive(data) {
    if (typeof data !== "string") return this.#emit("audio", data);
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return this.#error(new GatewayError("invalid_message", "The gateway sent a message that is not JSON."));
    }
    this.#emit("message", message);
    const { type, code, retryable } = message;
    if (type === "error") this.#error(new GatewayError(code, message.message, Boolean(retryable)));
    else if (type === "closed") this.#goodbye = message; // reported once the socket has closed
    else this.#emit(type, message);
    if (type === "started") {
      this.started = message;
      this.#pendingStart?.resolve(message);
      this.#pendingStart = null;
    }
  }

  #error(error) {
    this.#emit("error", error);
    if (this.#pendingStart) { // an error before `started` fails start()
      this.#pendingStart.reject(error);
      this.#pendingStart = null;
      this.close();
    }
  }

  /** @param {GatewayError | null} [failure] this client's own reason to end, already decided */
  #finish(code, reason, failure = null) {
    if (this.#closedInfo) return;
    clearInterval(this.#keepalive);
    this.#microphone?.stop();
    const unexpected = !this.#goodbye && !this.#closeRequested && code !== 1000;
    const error = failure ?? (unexpected ? this.#closeError(code, reason) : null);
    if (error) {
      const { code: errorCode, message, retryable } = error;
      this.#emit("message", { type: "error", code: errorCode, message, retryable });
      this.#emit("error", error);
      this.#pendingStart?.reject(error);
      this.#pendingStart = null;
    }
    this.#pendingStart?.reject(new GatewayError("closed", "The session closed before it started."));
    this.#pendingStart = null;
    // A close this client asked for is "closed" (a browser reports 1006 for one made while connecting).
    const fallback = reason || (code === 1000 || this.#closeRequested ? "closed" : error?.code ?? "connection_lost");
    this.#closedInfo = { code, reason: this.#goodbye?.reason ?? fallback, audioMs: this.#goodbye?.audioMs ?? null };
    this.#emit("closed", this.#closedInfo);
    this.#resolveClosed(this.#closedInfo);
  }

  /** What a close without the gateway's goodbye means, as an error. */
  #closeError(code, reason) {
    const detail = `code ${code}${reason ? `: ${reason}` : ""}`;
    if (!this.#opened) {
      // The browser hides the handshake's HTTP answer (401, 403, ...) and reports 1006 alone.
      const message = "The gateway refused the connection or could not be reached. Check that this page's origin "
        + "is allowed (GATEWAY_ALLOWED_ORIGINS) and that the token is valid, not expired and not already used "
        + `(the browser does not show the gateway's answer; ${detail}).`;
      return new GatewayError("connect_refused", message, false);
    }
    if (code === 1009) {
      const message = `A message was larger than the gateway accepts (${detail}).`;
      return new GatewayError("message_too_big", message, false);
    }
    return new GatewayError("connection_lost", `The connection to the gateway closed unexpectedly (${detail}).`, true);
  }

  #emit(type, value) {
    for (const listener of this.#listeners.get(type) ?? []) {
      try {
        listener(value);
      } catch (error) {
        (globalThis.reportError ?? console.error)(error);
      }
    }
  }
}

/** The longest prefix of `text` of at most `limit` UTF-8 bytes, never cutting a character. */
function utf8Prefix(text, limit) {
  const encoder = new TextEncoder();
  if (encoder.encode(text).byteLength <= limit) return text;
  let prefix = "";
  let size = 0;
  for (const character of text) {
    size += encoder.encode(character).byteLength;
    if (size > limit) break;
    prefix += character;
  }
  return prefix;
}
