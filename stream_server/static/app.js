// Live caption page for stream-server: microphone -> AudioWorklet (16 kHz pcm_s16le) -> /v1/listen, and file
// uploads to /v1/audio/transcriptions. Plain script, no build step; every URL is relative to the page so the
// server can sit behind a path prefix.
'use strict';

(() => {
  const TARGET_SAMPLE_RATE = 16000; // what the page sends; the server would resample anything else
  const CHUNK_SAMPLES = 800; // 50 ms per websocket message: small enough to add little latency
  const FLUSH_TIMEOUT_MS = 500; // wait for the worklet's last partial chunk before closing the stream
  const CLOSE_TIMEOUT_MS = 20000; // wait for the last finals after close_stream, then give up

  const $ = (id) => document.getElementById(id);
  const ui = {
    apiKey: $('api-key'),
    language: $('language'),
    languageNote: $('language-note'),
    modelName: $('model-name'),
    toggle: $('toggle'),
    status: $('status'),
    error: $('error'),
    finals: $('finals'),
    partial: $('partial'),
    captions: $('captions'),
    clear: $('clear'),
    upload: $('upload'),
    file: $('file'),
    uploadButton: $('upload-button'),
    uploadStatus: $('upload-status'),
    uploadResult: $('upload-result'),
    uploadText: $('upload-text'),
    downloadSrt: $('download-srt'),
    downloadVtt: $('download-vtt'),
  };

  // 'idle' -> 'starting' -> 'live' -> 'stopping' -> 'idle'
  let live = null; // the running capture: {state, socket, stream, context, node, sendMarks, ...}
  let modelId = '';

  // ---------------------------------------------------------------- helpers

  function authHeaders() {
    const key = ui.apiKey.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function formatTime(seconds) {
    const minutes = Math.floor(seconds / 60);
    const rest = (seconds - minutes * 60).toFixed(1).padStart(4, '0');
    return `${minutes}:${rest}`;
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  function setButton(state) {
    const labels = { idle: 'Start captions', starting: 'Starting…', live: 'Stop captions', stopping: 'Stopping…' };
    ui.toggle.textContent = labels[state];
    ui.toggle.disabled = state === 'starting' || state === 'stopping';
    ui.toggle.setAttribute('aria-pressed', String(state === 'live'));
    ui.toggle.classList.toggle('danger', state === 'live');
    document.body.dataset.captureState = state; // lets tests and styles see where the page is
  }

  function listenUrl() {
    const url = new URL('v1/listen', document.baseURI);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('sample_rate', String(TARGET_SAMPLE_RATE));
    url.searchParams.set('encoding', 'pcm_s16le');
    url.searchParams.set('interim_results', 'true');
    if (ui.language.value !== 'auto') url.searchParams.set('language', ui.language.value);
    return url.toString();
  }

  function nearBottom(element) {
    return element.scrollHeight - element.scrollTop - element.clientHeight < 40;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) ui.captions.scrollTop = ui.captions.scrollHeight;
  }

  // ---------------------------------------------------------------- model and language

  // English-only Whisper models: the `.en` family and the distil-whisper checkpoints.
  function isEnglishOnly(id) {
    return /\.en\b/.test(id) || /^distil-/.test(id);
  }

  async function loadModel() {
    try {
      const response = await fetch('v1/models', { headers: authHeaders() });
      if (!response.ok) {
        ui.modelName.textContent = response.status === 401 ? 'enter the API key' : `unavailable (${response.status})`;
        return;
      }
      const body = await response.json();
      modelId = (body.data && body.data[0] && body.data[0].id) || '';
      ui.modelName.textContent = modelId || 'unknown';
      applyLanguageChoice();
    } catch (err) {
      ui.modelName.textContent = 'unreachable';
    }
  }

  function applyLanguageChoice() {
    const englishOnly = isEnglishOnly(modelId);
    if (englishOnly) ui.language.value = 'en';
    ui.language.disabled = englishOnly || live !== null;
    ui.languageNote.textContent = englishOnly
      ? 'This model understands English only.'
      : 'Choose the spoken language, or let the server detect it.';
  }

  // ---------------------------------------------------------------- captions

  function showPartial(event) {
    const wasNearBottom = nearBottom(ui.captions);
    ui.partial.textContent = event.text || '';
    ui.partial.dataset.utteranceId = String(event.utterance_id);
    keepScrolled(wasNearBottom);
  }

  function clearPartial(utteranceId) {
    if (ui.partial.dataset.utteranceId === String(utteranceId)) {
      ui.partial.textContent = '';
      delete ui.partial.dataset.utteranceId;
    }
  }

  // Wall time from sending the audio that reaches the final's `end` to receiving the final. A final may end a
  // few milliseconds past the last audio sent (the server rounds to its frames): then the last send counts.
  function latencyOf(session, endSeconds, receivedAt) {
    const marks = session.sendMarks;
    if (marks.length === 0) return null;
    let index = marks.findIndex((mark) => mark.endSeconds >= endSeconds - 1e-6);
    if (index < 0) index = marks.length - 1;
    const latencyMs = receivedAt - marks[index].sentAt;
    marks.splice(0, index); // finals arrive in order: earlier marks are not needed again
    return latencyMs;
  }

  function appendFinal(session, event, receivedAt) {
    clearPartial(event.utterance_id);
    const text = (event.text || '').trim();
    if (!text) return;
    const wasNearBottom = nearBottom(ui.captions);

    const item = document.createElement('li');
    item.className = 'final';
    item.dataset.utteranceId = String(event.utterance_id);
    item.dataset.start = String(event.start);
    item.dataset.end = String(event.end);

    const textSpan = document.createElement('span');
    textSpan.className = 'text';
    textSpan.textContent = text;

    const meta = document.createElement('span');
    meta.className = 'meta';
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = `${formatTime(event.start)}–${formatTime(event.end)}`;
    const latency = document.createElement('span');
    latency.className = 'latency';
    const latencyMs = latencyOf(session, event.end, receivedAt);
    latency.textContent = latencyMs === null ? 'latency —' : `latency ${Math.round(latencyMs)} ms`;
    if (latencyMs !== null) item.dataset.latencyMs = String(Math.round(latencyMs));
    meta.append(time, latency);

    item.append(textSpan, meta);
    ui.finals.append(item);
    keepScrolled(wasNearBottom);
  }

  function handleServerEvent(session, event, receivedAt) {
    switch (event.type) {
      case 'session.started':
        setStatus(`Listening (model ${event.model}). Speak now.`);
        break;
      case 'speech.started':
        setStatus('Hearing speech…');
        break;
      case 'partial':
        showPartial(event);
        break;
      case 'final':
        appendFinal(session, event, receivedAt);
        if (session.state === 'live') setStatus('Listening. Speak now.');
        break;
      case 'error':
        session.serverError = `Server error (${event.code}): ${event.message}`;
        showError(session.serverError);
        break;
      case 'session.closed':
        session.closedByServer = true;
        break;
      default:
        break; // unknown events are ignored: newer servers may add some
    }
  }

  // ---------------------------------------------------------------- capture

  async function start() {
    showError('');
    if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
      showError('The microphone needs a secure page: open it over https or on localhost, in a current browser.');
      return;
    }
    const session = { state: 'starting', sendMarks: [], samplesSent: 0, queued: [], closedByServer: false };
    live = session;
    setButton('starting');
    applyLanguageChoice();
    setStatus('Asking for the microphone…');
    try {
      session.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
      });
      session.context = new AudioContext({ latencyHint: 'interactive' });
      await session.context.audioWorklet.addModule('worklet.js');
      session.node = new AudioWorkletNode(session.context, 'pcm-capture', {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { targetSampleRate: TARGET_SAMPLE_RATE, chunkSamples: CHUNK_SAMPLES },
      });
      session.node.port.onmessage = (message) => onWorkletMessage(session, message.data);
      setStatus('Connecting…'); // session.started replaces it
      openSocket(session);
      const source = session.context.createMediaStreamSource(session.stream);
      source.connect(session.node);
      session.node.connect(session.context.destination); // silent output; keeps the node processing
      await session.context.resume();
    } catch (err) {
      showError(`Could not start: ${err && err.message ? err.message : err}`);
      teardown(session);
    }
  }

  function openSocket(session) {
    const key = ui.apiKey.value.trim();
    const socket = key ? new WebSocket(listenUrl(), [`bearer.${key}`]) : new WebSocket(listenUrl());
    session.socket = socket;
    socket.onopen = () => {
      if (session.state !== 'starting') return;
      session.state = 'live';
      setButton('live');
      for (const pcm of session.queued) sendAudio(session, pcm);
      session.queued = [];
    };
    socket.onmessage = (message) => {
      const receivedAt = performance.now();
      if (typeof message.data !== 'string') return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      handleServerEvent(session, event, receivedAt);
    };
    socket.onclose = (close) => {
      if (session.state === 'idle') return; // already torn down on our side
      const expected = session.state === 'stopping' || session.closedByServer;
      if (!expected) {
        const reason = close.reason ? `: ${close.reason}` : '';
        const closed = `The connection closed (code ${close.code}${reason}).`;
        const hint = session.state === 'starting' ? ' Check the API key and that the server is running.' : '';
        // The server says why in an error event before it closes: keep that in front.
        showError(session.serverError ? `${session.serverError} ${closed}` : `${closed}${hint}`);
      }
      teardown(session);
    };
  }

  function onWorkletMessage(session, data) {
    if (data.type === 'flushed') {
      if (session.onFlushed) session.onFlushed();
      return;
    }
    if (data.type !== 'audio') return;
    if (session.state === 'starting') session.queued.push(data.pcm);
    else if (session.state === 'live' || session.state === 'stopping') sendAudio(session, data.pcm);
  }

  function sendAudio(session, pcm) {
    if (!session.socket || session.socket.readyState !== WebSocket.OPEN) return;
    session.socket.send(pcm);
    session.samplesSent += pcm.byteLength / 2;
    session.sendMarks.push({ endSeconds: session.samplesSent / TARGET_SAMPLE_RATE, sentAt: performance.now() });
  }

  async function stop() {
    const session = live;
    if (!session || session.state !== 'live') return;
    session.state = 'stopping';
    setButton('stopping');
    setStatus('Finishing the last words…');
    // The worklet still holds up to one partly filled chunk: send it before ending the stream.
    await new Promise((resolve) => {
      session.onFlushed = resolve;
      session.node.port.postMessage({ type: 'flush' });
      setTimeout(resolve, FLUSH_TIMEOUT_MS);
    });
    stopAudio(session);
    if (session.socket.readyState === WebSocket.OPEN) {
      session.socket.send(JSON.stringify({ type: 'close_stream' }));
      // The server sends the remaining finals, then session.closed, then closes: onclose tears down.
      session.closeTimer = setTimeout(() => session.socket.close(1000, 'client gave up waiting'), CLOSE_TIMEOUT_MS);
    } else {
      teardown(session);
    }
  }

  function stopAudio(session) {
    if (session.stream) session.stream.getTracks().forEach((track) => track.stop());
    if (session.node) session.node.port.onmessage = null;
    if (session.context && session.context.state !== 'closed') session.context.close();
    session.stream = null;
    session.context = null;
  }

  function teardown(session) {
    stopAudio(session);
    clearTimeout(session.closeTimer);
    if (session.socket && session.socket.readyState === WebSocket.OPEN) session.socket.close();
    session.state = 'idle';
    if (live !== session) return;
    live = null;
    ui.partial.textContent = '';
    setButton('idle');
    setStatus(ui.finals.children.length ? 'Stopped.' : 'Stopped. No speech was recognised.');
    applyLanguageChoice();
  }

  // ---------------------------------------------------------------- file upload

  async function transcribeAs(file, format) {
    const form = new FormData();
    form.append('file', file, file.name);
    form.append('response_format', format);
    if (modelId) form.append('model', modelId);
    if (ui.language.value !== 'auto') form.append('language', ui.language.value);
    const response = await fetch('v1/audio/transcriptions', { method: 'POST', headers: authHeaders(), body: form });
    const body = await response.text();
    if (!response.ok) {
      let message = body;
      try {
        message = JSON.parse(body).error.message;
      } catch (err) {
        // not OpenAI's error shape: show the body as it is
      }
      throw new Error(`${response.status}: ${message}`);
    }
    return body;
  }

  function offerDownload(link, text, mimeType, filename) {
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([text], { type: mimeType }));
    link.download = filename;
  }

  async function upload(submitEvent) {
    submitEvent.preventDefault();
    const file = ui.file.files[0];
    if (!file) {
      ui.uploadStatus.textContent = 'Choose a file first.';
      ui.file.focus();
      return;
    }
    ui.uploadButton.disabled = true;
    ui.uploadResult.hidden = true;
    ui.uploadStatus.textContent = `Transcribing ${file.name}…`;
    try {
      // Both subtitle formats come from the server, which owns their formatting.
      const [srt, vtt] = await Promise.all([transcribeAs(file, 'srt'), transcribeAs(file, 'vtt')]);
      const stem = file.name.replace(/\.[^.]+$/, '') || 'transcript';
      offerDownload(ui.downloadSrt, srt, 'application/x-subrip', `${stem}.srt`);
      offerDownload(ui.downloadVtt, vtt, 'text/vtt', `${stem}.vtt`);
      ui.uploadText.textContent = srt.trim() || '(no speech found)';
      ui.uploadResult.hidden = false;
      ui.uploadStatus.textContent = `Done: ${file.name}.`;
    } catch (err) {
      ui.uploadStatus.textContent = `Transcription failed (${err.message}).`;
    } finally {
      ui.uploadButton.disabled = false;
    }
  }

  // ---------------------------------------------------------------- wiring

  ui.toggle.addEventListener('click', () => (live ? stop() : start()));
  ui.clear.addEventListener('click', () => {
    ui.finals.replaceChildren();
    ui.partial.textContent = '';
  });
  ui.upload.addEventListener('submit', upload);
  ui.apiKey.addEventListener('change', loadModel);
  setButton('idle');
  loadModel();
})();
