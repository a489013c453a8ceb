// Voice notes: recorded from the microphone with MediaRecorder (Opus in
// WebM, or Ogg where that is what the browser records), sent as an
// upload like any file; the server reads it as audio with its duration.

// recordingType is the first container the browser can record.
function recordingType() {
  return ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm', 'audio/ogg']
    .find((t) => MediaRecorder.isTypeSupported(t)) || '';
}

export function canRecord() {
  return typeof MediaRecorder !== 'undefined' && !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

export class Recorder {
  // start asks for the microphone (the browser may prompt) and records.
  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const mimeType = recordingType();
    this.rec = new MediaRecorder(this.stream, mimeType ? { mimeType } : {});
    this.chunks = [];
    this.rec.addEventListener('dataavailable', (ev) => { if (ev.data.size) this.chunks.push(ev.data); });
    this.rec.start();
  }

  get recording() { return !!this.rec && this.rec.state === 'recording'; }

  // stop ends the recording and gives it as a File (null if empty).
  stop() {
    return new Promise((resolve) => {
      const rec = this.rec;
      rec.addEventListener('stop', () => {
        this.stream.getTracks().forEach((tr) => tr.stop());
        const type = (rec.mimeType || 'audio/webm').split(';')[0];
        const ext = type.endsWith('ogg') ? 'ogg' : 'webm';
        const stamp = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '');
        resolve(this.chunks.length ? new File(this.chunks, `voice-note-${stamp}.${ext}`, { type }) : null);
        this.rec = null;
      }, { once: true });
      rec.stop();
    });
  }

  // cancel drops the recording.
  cancel() {
    if (this.rec && this.rec.state !== 'inactive') this.rec.stop();
    if (this.stream) this.stream.getTracks().forEach((tr) => tr.stop());
    this.rec = null;
  }
}
