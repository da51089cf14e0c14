"use strict";
// The dashboard's Live panel: turns the microphone into what the realtime
// socket takes, 16-bit PCM, mono, 24 kHz, posted about 100 ms at a time.
// Channels are averaged; each output sample is the mean of the input samples
// it spans (a box filter: enough against aliasing for speech from 44.1/48 kHz).
class Pcm16Downsampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = (options.processorOptions && options.processorOptions.targetRate) || 24000;
    this.step = sampleRate / target;  // input samples per output sample (global sampleRate: the context's)
    this.pos = 0;
    this.sum = 0;
    this.count = 0;
    this.last = 0;
    this.out = new Int16Array(Math.round(target / 10));
    this.n = 0;
    this.port.onmessage = (event) => { if (event.data === "flush") this.flush(); };
  }

  push(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.n === this.out.length) this.flush();
  }

  flush() {
    if (!this.n) return;
    const chunk = this.out.slice(0, this.n);
    this.n = 0;
    this.port.postMessage(chunk.buffer, [chunk.buffer]);
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const length = channels[0].length;
    for (let i = 0; i < length; i++) {
      let v = 0;
      for (const channel of channels) v += channel[i];
      this.sum += v / channels.length;
      this.count++;
      this.pos += 1;
      while (this.pos >= this.step) {  // more than once only when the context runs below 24 kHz
        this.pos -= this.step;
        if (this.count) { this.last = this.sum / this.count; this.sum = 0; this.count = 0; }
        this.push(this.last);
      }
    }
    return true;
  }
}
registerProcessor("pcm16-downsampler", Pcm16Downsampler);
