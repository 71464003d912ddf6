/**
 * AudioWorklet processor used by dataflow-gateway.js: cuts the (mono) input into frames of
 * `frameSamples` samples at the AudioContext's own rate and posts each frame to the main thread
 * as little-endian pcm16 or f32 bytes, with its RMS and peak level for a meter.
 *
 * No resampling happens here: the gateway resamples with soxr, which is better than anything
 * that fits in a worklet.
 */
class DataflowCaptureProcessor extends AudioWorkletProcessor {
  /** @param {{processorOptions: {frameSamples: number, encoding: "pcm16" | "f32"}}} options */
  constructor(options) {
    super();
    const { frameSamples, encoding } = options.processorOptions;
    this.frame = new Float32Array(frameSamples);
    this.filled = 0;
    this.encoding = encoding;
    this.running = true;
    this.port.onmessage = (message) => {
      if (message.data === "stop") this.running = false;
    };
  }

  /** @param {Float32Array[][]} inputs */
  process(inputs) {
    const samples = inputs[0] && inputs[0][0];
    if (samples) {
      let offset = 0;
      while (offset < samples.length) {
        const n = Math.min(samples.length - offset, this.frame.length - this.filled);
        this.frame.set(samples.subarray(offset, offset + n), this.filled);
        this.filled += n;
        offset += n;
        if (this.filled === this.frame.length) this.flush();
      }
    }
    return this.running;
  }

  flush() {
    const frame = this.frame;
    const width = this.encoding === "f32" ? 4 : 2;
    const view = new DataView(new ArrayBuffer(frame.length * width));
    let sumSquares = 0;
    let peak = 0;
    for (let i = 0; i < frame.length; i++) {
      const x = Math.max(-1, Math.min(1, frame[i]));
      sumSquares += x * x;
      peak = Math.max(peak, Math.abs(x));
      if (width === 4) view.setFloat32(i * 4, x, true);
      else view.setInt16(i * 2, Math.round(x * 32767), true);
    }
    this.filled = 0;
    const rms = Math.sqrt(sumSquares / frame.length);
    this.port.postMessage({ audio: view.buffer, rms, peak }, [view.buffer]);
  }
}

registerProcessor("dataflow-capture", DataflowCaptureProcessor);
