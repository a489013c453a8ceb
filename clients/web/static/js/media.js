// Media: uploads with progress (XMLHttpRequest: fetch cannot report
// upload progress), waiting until the server has processed the file, and
// reading media with the access token into blob: URLs (an <img src> could
// not send the Authorization header).

// upload sends file to POST /media; onProgress gets 0..1. Resolves with
// the media ID once the server has it (processing then starts). key, the
// upload's Idempotency-Key, is the same for every attempt to upload this
// file: an attempt whose answer was lost but that the server stored is
// answered by the next one (200, the same media ID), not stored twice.
export function upload(api, file, onProgress, key) {
  const send = () => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${api.base}/media?name=${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader('Authorization', `Bearer ${api.token}`);
    xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
    if (key) xhr.setRequestHeader('Idempotency-Key', key);
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded / ev.total); };
    xhr.onload = () => {
      let v = null;
      try { v = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if ((xhr.status === 202 || xhr.status === 200) && v && v.mediaId) resolve(v.mediaId);
      else reject(Object.assign(new Error((v && v.error && v.error.message) || `upload failed (${xhr.status})`), { status: xhr.status }));
    };
    xhr.onerror = () => reject(new Error('upload failed: network error'));
    xhr.send(file);
  });
  return send().catch(async (e) => {
    if (e.status !== 401) throw e;
    await api.refresh();
    return send();
  });
}

// ready polls the upload's info until it is ready (or refused).
export async function ready(api, id, timeoutMs = 60000) {
  const until = Date.now() + timeoutMs;
  for (let wait = 150; Date.now() < until; wait = Math.min(wait * 1.5, 2000)) {
    const info = await api.call('GET', `/media/${encodeURIComponent(id)}/info`);
    if (info.status === 'ready') return info;
    if (info.status === 'rejected') throw Object.assign(new Error(`the file was refused: ${info.reason}`), { refused: true });
    await new Promise((r) => setTimeout(r, wait));
  }
  throw new Error('the file is still being processed; try again');
}

// refusedFile says whether an upload's failure refuses the file itself,
// which sending it again would not change: its processing refused it,
// or a 4xx answer other than 401 (signed out), 408 and 429 (later).
export function refusedFile(e) {
  if (e && e.refused) return true;
  const st = e && e.status;
  return typeof st === 'number' && st >= 400 && st < 500 && st !== 401 && st !== 408 && st !== 429;
}

// fetchBlob reads a media path with the token (again after a refresh
// on 401).
async function fetchBlob(api, path) {
  const get = () => fetch(api.base + path, { headers: { Authorization: `Bearer ${api.token}` } });
  let res = await get();
  if (res.status === 401) { await api.refresh(); res = await get(); }
  if (!res.ok) {
    // The server's own words (503 media_unavailable: the file is of
    // another region, which cannot be reached now), not a bare status.
    let msg = '';
    try { const v = await res.json(); msg = (v && v.error && v.error.message) || ''; } catch { /* not JSON */ }
    throw Object.assign(new Error(msg ? `The file cannot be shown: ${msg}` : `media: ${res.status}`), { status: res.status });
  }
  return res.blob();
}

// fetchBlobURL gives a blob: URL of a media path, which the caller
// revokes.
export async function fetchBlobURL(api, path) {
  return URL.createObjectURL(await fetchBlob(api, path));
}

// MediaCache holds blob: URLs of the media shown in messages (previews,
// voice notes) by path, the least recently used dropped (and revoked)
// beyond max entries or maxBytes: a page left open for days would
// otherwise keep every picture it ever showed. A URL an element of the
// page still shows is kept (an <audio> could not play it any more).
export class MediaCache {
  constructor(api, { max = 200, maxBytes = 64 << 20 } = {}) {
    this.api = api;
    this.max = max;
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this.entries = new Map(); // path → {promise, url, size}, oldest use first
  }

  // now is the blob: URL of path if it is at hand (renders after the first).
  now(path) {
    const e = this.entries.get(path);
    if (!e || !e.url) return undefined;
    this.touch(path, e);
    return e.url;
  }

  get(path) {
    let e = this.entries.get(path);
    if (e) {
      this.touch(path, e);
      return e.promise;
    }
    e = { url: null, size: 0 };
    e.promise = (async () => {
      const blob = await fetchBlob(this.api, path);
      if (this.entries.get(path) !== e) throw new Error('media: cleared'); // clear() ran meanwhile
      e.url = URL.createObjectURL(blob);
      e.size = blob.size;
      this.bytes += blob.size;
      this.evict();
      return e.url;
    })().catch((err) => { if (this.entries.get(path) === e) this.entries.delete(path); throw err; });
    this.entries.set(path, e);
    return e.promise;
  }

  touch(path, e) {
    this.entries.delete(path);
    this.entries.set(path, e);
  }

  // evict drops the oldest entries beyond the bounds, but none still
  // loading or shown.
  evict() {
    let over = this.entries.size - this.max;
    for (const [path, e] of this.entries) {
      if (over <= 0 && this.bytes <= this.maxBytes) return;
      if (!e.url || inUse(e.url)) continue;
      this.entries.delete(path);
      this.bytes -= e.size;
      URL.revokeObjectURL(e.url);
      over--;
    }
  }

  // clear revokes every URL (the user signed out).
  clear() {
    for (const e of this.entries.values()) if (e.url) URL.revokeObjectURL(e.url);
    this.entries.clear();
    this.bytes = 0;
  }
}

function inUse(url) {
  return !!document.querySelector(`[src="${CSS.escape(url)}"]`);
}

export function sizeText(n) {
  if (!(n > 0)) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
