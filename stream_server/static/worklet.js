// AudioWorklet that turns microphone audio into 16 kHz mono pcm_s16le chunks for /v1/listen.
//
// Runs on the audio rendering thread. The AudioContext runs at the device's rate (often 44.1 or 48 kHz,
// which some browsers will not let a page change for a microphone source), so resampling happens here:
// a windowed-sinc low-pass evaluated at each output instant, which both interpolates and removes what
// would alias above the new Nyquist frequency. Chunks of `chunkSamples` output samples are posted to the
// page as transferred ArrayBuffers; `{type: "flush"}` posts the partly filled chunk, then `{type: "flushed"}`.

const HALF_TAPS = 24; // input samples on each side of an output instant; ~0.5 ms at 48 kHz
const PASSBAND = 0.9; // fraction of the output Nyquist frequency kept; the rest is the transition band
const TABLE_STEPS_PER_SAMPLE = 256; // kernel lookup resolution; linear interpolation between entries

class StreamingResampler {
  constructor(inputRate, outputRate) {
    this.step = inputRate / outputRate; // input samples per output sample
    // Cutoff in cycles per input sample: below both Nyquist frequencies.
    this.cutoff = 0.5 * Math.min(1, outputRate / inputRate) * PASSBAND;
    this.pending = new Float32Array(4096);
    this.pendingLength = 0;
    this.pendingStart = 0; // absolute index of pending[0] in the input stream
    this.nextPosition = 0; // absolute input position (fractional) of the next output sample
    this.table = windowedSincTable(this.cutoff);
  }

  // Appends input samples and returns the output samples that can be computed so far.
  push(input) {
    this.append(input);
    const out = [];
    const lastAvailable = this.pendingStart + this.pendingLength - 1;
    while (Math.floor(this.nextPosition) + HALF_TAPS <= lastAvailable) {
      out.push(this.sampleAt(this.nextPosition));
      this.nextPosition += this.step;
    }
    this.discardBefore(Math.floor(this.nextPosition) - HALF_TAPS);
    return out;
  }

  sampleAt(position) {
    const centre = Math.floor(position);
    let sum = 0;
    let weightSum = 0;
    for (let k = centre - HALF_TAPS + 1; k <= centre + HALF_TAPS; k++) {
      const index = k - this.pendingStart;
      if (index < 0) continue; // before the first input sample: the stream starts in silence
      const x = position - k;
      const w = this.kernel(x);
      sum += w * this.pending[index];
      weightSum += w;
    }
    // Normalising keeps unit gain at DC whatever the fractional position.
    return weightSum > 0 ? sum / weightSum : 0;
  }

  kernel(x) {
    const scaled = Math.abs(x) * TABLE_STEPS_PER_SAMPLE;
    const i = Math.floor(scaled);
    if (i >= this.table.length - 1) return 0;
    const frac = scaled - i;
    return this.table[i] + frac * (this.table[i + 1] - this.table[i]);
  }

  append(input) {
    const needed = this.pendingLength + input.length;
    if (needed > this.pending.length) {
      const grown = new Float32Array(Math.max(needed, this.pending.length * 2));
      grown.set(this.pending.subarray(0, this.pendingLength));
      this.pending = grown;
    }
    this.pending.set(input, this.pendingLength);
    this.pendingLength = needed;
  }

  discardBefore(absoluteIndex) {
    const drop = Math.min(this.pendingLength, absoluteIndex - this.pendingStart);
    if (drop <= 0) return;
    this.pending.copyWithin(0, drop, this.pendingLength);
    this.pendingLength -= drop;
    this.pendingStart += drop;
  }
}

// Kernel values at |x| = i / TABLE_STEPS_PER_SAMPLE input samples: sinc low-pass times a Hann window that
// reaches zero at HALF_TAPS. The kernel is symmetric, so half of it is enough.
function windowedSincTable(cutoff) {
  const table = new Float32Array(HALF_TAPS * TABLE_STEPS_PER_SAMPLE + 1);
  for (let i = 0; i < table.length; i++) {
    const x = i / TABLE_STEPS_PER_SAMPLE;
    const arg = 2 * cutoff * x;
    const sinc = arg === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
    const hann = 0.5 + 0.5 * Math.cos((Math.PI * x) / HALF_TAPS);
    table[i] = sinc * hann;
  }
  return table;
}

class PcmCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetSampleRate = 16000, chunkSamples = 800 } = options.processorOptions || {};
    // `sampleRate` is the AudioContext's rate, a global of the worklet scope.
    this.resampler = sampleRate === targetSampleRate ? null : new StreamingResampler(sampleRate, targetSampleRate);
    this.chunk = new Int16Array(chunkSamples);
    this.chunkLength = 0;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === 'flush') {
        this.postChunk();
        this.port.postMessage({ type: 'flushed' });
      }
    };
  }

  process(inputs, outputs) {
    // The output stays silent: the node is connected to the destination only so that it keeps running.
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const mono = mixToMono(channels);
    const samples = this.resampler ? this.resampler.push(mono) : mono;
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i]));
      this.chunk[this.chunkLength++] = Math.round(s < 0 ? s * 0x8000 : s * 0x7fff);
      if (this.chunkLength === this.chunk.length) this.postChunk();
    }
    return true;
  }

  postChunk() {
    if (this.chunkLength === 0) return;
    const pcm = this.chunk.slice(0, this.chunkLength).buffer;
    this.port.postMessage({ type: 'audio', pcm }, [pcm]);
    this.chunkLength = 0;
  }
}

function mixToMono(channels) {
  if (channels.length === 1) return channels[0];
  const mono = new Float32Array(channels[0].length);
  for (const channel of channels) {
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / channels.length;
  }
  return mono;
}

registerProcessor('pcm-capture', PcmCaptureProcessor);
