// Media: uploads with progress (XMLHttpRequest: fetch cannot report
// upload progress), waiting until the server has processed the file, and
// reading media with the access token into blob: URLs (an <img src> could
// not send the Authorization header).

// upload sends file to POST /media; onProgress gets 0..1. Resolves with
// the media ID once the server has it (processing then starts).
export function upload(api, file, onProgress) {
  const send = () => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${api.base}/media?name=${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader('Authorization', `Bearer ${api.token}`);
    xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded / ev.total); };
    xhr.onload = () => {
      let v = null;
      try { v = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 202 && v && v.mediaId) resolve(v.mediaId);
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
    if (info.status === 'rejected') throw new Error(`the file was refused: ${info.reason}`);
    await new Promise((r) => setTimeout(r, wait));
  }
  throw new Error('the file is still being processed; try again');
}

// blobURL fetches a media path with the token and gives a blob: URL,
// cached per path for the page's life.
export class MediaCache {
  constructor(api) {
    this.api = api;
    this.urls = new Map();
    this.done = new Map(); // path → blob: URL, for renders after the first
  }

  now(path) {
    return this.done.get(path);
  }

  get(path) {
    if (!this.urls.has(path)) {
      this.urls.set(path, (async () => {
        const get = () => fetch(this.api.base + path, { headers: { Authorization: `Bearer ${this.api.token}` } });
        let res = await get();
        if (res.status === 401) { await this.api.refresh(); res = await get(); }
        if (!res.ok) throw new Error(`media: ${res.status}`);
        const url = URL.createObjectURL(await res.blob());
        this.done.set(path, url);
        return url;
      })().catch((e) => { this.urls.delete(path); throw e; }));
    }
    return this.urls.get(path);
  }
}

export function sizeText(n) {
  if (!(n > 0)) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
