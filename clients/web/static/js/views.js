// Views: DOM built with createElement and textContent only. Nothing a
// user wrote (messages, names) is ever parsed as HTML.
import { timeOf } from './store.js';
import { sizeText } from './media.js';

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// reconcile makes parent's children the nodes of items, in order, each
// {key, sig, make}: a node whose key and sig are unchanged since the last
// call is kept (not rebuilt), so that a render after one new message
// touches one node, not ten thousand.
export function reconcile(parent, items) {
  const old = parent.keyed || new Map();
  const next = new Map();
  const nodes = items.map((it) => {
    const had = old.get(it.key);
    const node = had && had.sig === it.sig ? had.node : it.make();
    next.set(it.key, { sig: it.sig, node });
    return node;
  });
  parent.keyed = next;
  let at = parent.firstChild;
  for (const node of nodes) {
    if (node === at) { at = at.nextSibling; continue; }
    parent.insertBefore(node, at);
  }
  while (at) { const n = at.nextSibling; at.remove(); at = n; }
}

export function signIn({ onSignIn, onRegister, error, providers = [] }) {
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none' });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, minlength: 8 });
  const err = h('p', { class: 'error', role: 'alert' }, error || '');
  const form = h('form', { class: 'signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'edgechat'),
    h('label', { for: 'username' }, 'Username'), user,
    h('label', { for: 'password' }, 'Password'), pass,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
      h('button', { type: 'button', id: 'register', onclick: () => submit(onRegister) }, 'Create account')),
    providers.length ? h('div', { class: 'providers' }, providers.map((p) => h('a', {
      class: 'provider', 'data-provider': p.name,
      // The provider signs the user in and sends the browser back here
      // with the session cookie set (no token in the URL).
      href: `/auth/oidc/${encodeURIComponent(p.name)}/start?session=cookie&redirect=%2F`,
    }, `Sign in with ${p.name}`))) : null,
    err);
  // One sign-in (or sign-up) at a time: a second press while the first
  // is under way (a double click, Enter then the button) would sign in
  // twice and start the app twice.
  let busy = false;
  const submit = async (fn) => {
    if (busy || !form.reportValidity()) return;
    busy = true;
    err.textContent = '';
    try { await fn(user.value.trim(), pass.value); } catch (e) { err.textContent = e.message; } finally { busy = false; }
  };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); submit(onSignIn); });
  return form;
}

function initials(name) {
  return (name || '?').replace(/[^\p{L}\p{N}]/gu, '').slice(0, 2).toUpperCase() || '?';
}

export function convName(store, c) {
  if (!c.group) return c.peer;
  const g = store.groups.get(c.group);
  return g && g.name ? g.name : 'group';
}

const relFmt = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

// presenceText says how a user is: online, inactive, or last seen when.
export function presenceText(p) {
  if (!p) return '';
  if (p.status === 'online') return 'online';
  if (p.status === 'inactive') return 'inactive';
  const t = Date.parse(p.lastSeen);
  if (!t) return 'offline';
  const min = Math.round((t - Date.now()) / 60000);
  if (min > -1) return 'last seen just now';
  if (min > -60) return `last seen ${relFmt.format(min, 'minute')}`;
  const hours = Math.round(min / 60);
  if (hours > -24) return `last seen ${relFmt.format(hours, 'hour')}`;
  return `last seen ${relFmt.format(Math.round(hours / 24), 'day')}`;
}

// convItems are the conversation list's items (for reconcile).
export function convItems(store, onOpen) {
  return store.list().map((c) => {
    const name = convName(store, c);
    const last = c.last ? `${c.group && c.last.from !== store.me ? `${store.senderName(c.last.from)}: ` : ''}${c.last.body || c.last.type}` : '';
    const p = c.peer ? store.presence.get(c.peer) : null;
    const current = c.key === store.current;
    const muted = !!store.mutedUntil(c);
    const label = `${name}${p ? `, ${presenceText(p)}` : ''}${muted ? ', muted' : ''}${c.unread ? `, ${c.unread} unread` : ''}`;
    return {
      key: c.key,
      sig: `${label}\u0000${last}\u0000${current}\u0000${p ? p.status : ''}`,
      make: () => h('li', {}, h('button', {
        type: 'button', 'aria-current': current ? 'true' : 'false', 'data-conv': c.key, 'aria-label': label, onclick: () => onOpen(c),
      }, h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(name),
        p ? h('span', { class: 'dot', 'data-presence': p.status }) : null),
      h('span', { class: 'conv-text' }, h('span', { class: 'conv-name' }, name), h('span', { class: 'conv-last' }, last)),
      muted ? h('span', { class: 'muted', title: 'Muted', 'aria-hidden': 'true' }, 'muted') : null,
      h('span', { class: 'badge' }, c.unread ? String(Math.min(c.unread, 999)) : ''))),
    };
  });
}

// viewer is the full-size view of a media item (a modal dialog).
export function viewer(md, url, onClose) {
  const close = h('button', { type: 'button', class: 'close', onclick: onClose }, 'Close');
  const body = md.kind === 'image' ? h('img', { src: url, alt: md.name || 'image' })
    : md.kind === 'video' ? h('video', { src: url, controls: true, 'aria-label': md.name || 'video' })
      : h('a', { href: url, download: md.name || 'file' }, `Download ${md.name || 'file'} (${sizeText(md.size)})`);
  const d = h('dialog', { class: 'viewer', 'aria-label': md.name || 'media' }, body, close);
  d.addEventListener('close', onClose);
  return d;
}

export function linkify(text) {
  const out = [];
  const re = /\bhttps?:\/\/[^\s<>"']+/g;
  let at = 0;
  for (const m of text.matchAll(re)) {
    out.push(text.slice(at, m.index));
    out.push(h('a', { href: m[0], target: '_blank', rel: 'noopener noreferrer' }, m[0]));
    at = m.index + m[0].length;
  }
  out.push(text.slice(at));
  return out;
}

const dayFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const timeFmt = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });

// whenLoaded hands use the blob: URL of path, reading it again after a
// failure (the network dropped the request), backing off 1 to 16 s,
// while el is on the page: a message is drawn once, and nothing else
// would ask again.
function whenLoaded(cache, path, el, use, delay = 1000) {
  cache.get(path).then(use).catch(() => {
    if (delay > 16000) return;
    setTimeout(() => { if (el.isConnected) whenLoaded(cache, path, el, use, delay * 2); }, delay);
  });
}

// mediaBlock shows a media message: an image or video preview (blurred
// placeholder first), a player for audio, a download button otherwise.
function mediaBlock(md, cache, onView) {
  const path = `/media/${encodeURIComponent(md.id)}`;
  const name = md.name || md.kind || 'file';
  if (md.kind === 'image' || (md.kind === 'video' && md.preview)) {
    const src = md.preview ? `${path}/preview` : path;
    const ready = cache.now(src);
    const img = h('img', {
      class: ready ? 'thumb' : 'thumb blurred', alt: name,
      src: ready || (typeof md.placeholder === 'string' && md.placeholder.startsWith('data:image/') ? md.placeholder : null),
    });
    if (!ready) whenLoaded(cache, src, img, (u) => { img.src = u; img.classList.remove('blurred'); });
    return h('button', { type: 'button', class: 'thumbbtn', 'aria-label': `View ${name}`, onclick: () => onView(md) }, img);
  }
  if (md.kind === 'audio') {
    const a = h('audio', { controls: true, preload: 'none', 'aria-label': `Voice note ${name}` });
    whenLoaded(cache, path, a, (u) => { a.src = u; });
    return a;
  }
  return h('button', { type: 'button', class: 'file', onclick: () => onView(md) }, `${name} (${sizeText(md.size)})`);
}

// quote shows the message m replies to, as far as the page knows it.
function quote(store, c, m) {
  const orig = c.messages.get(m.replyTo);
  const text = orig ? (orig.body || (orig.media && orig.media.name) || orig.type) : 'an earlier message';
  return h('blockquote', { class: 'quote' }, orig ? h('strong', {}, `${store.senderName(orig.from)} `) : null, text.length > 120 ? `${text.slice(0, 120)}…` : text);
}

// undeliverableReasons say why another region refused a message (or,
// expired, why this region's link gave it up).
const undeliverableReasons = { no_such_user: 'no such user', forbidden: 'not accepted', invalid: 'refused', expired: 'region unreachable too long' };

// stateText is a message state as the reader sees it.
function stateText(state, reason) {
  if (state !== 'undeliverable') return state;
  return `not delivered: ${undeliverableReasons[reason] || 'refused'}`;
}

// messageItems are the open conversation's items (for reconcile): day
// separators, messages oldest first, then my pending sends (one that
// failed with a Remove button, and a Retry when trying again may help).
export function messageItems(store, c, cache, onView, onReply, onRemove) {
  const items = [];
  let day = '';
  for (const m of store.sorted(c)) {
    const t = timeOf(m.id);
    const d = dayFmt.format(t);
    if (d !== day) {
      day = d;
      items.push({ key: `day:${d}`, sig: '', make: () => h('li', { class: 'day' }, d) });
    }
    const mine = m.from === store.me;
    const state = mine ? store.stateOf(c, m) : '';
    const replyKnown = m.replyTo && c.messages.has(m.replyTo) ? `q${store.senderName(c.messages.get(m.replyTo).from)}` : '';
    const from = store.senderName(m.from);
    items.push({
      key: `id:${m.id}`,
      sig: `${state}\u0000${replyKnown}\u0000${from}`,
      make: () => h('li', { class: mine ? 'msg mine' : 'msg', 'data-id': m.id, 'data-state': state || null },
        c.group && !mine ? h('strong', { class: 'from' }, from) : null,
        m.replyTo ? quote(store, c, m) : null,
        m.type === 'media' && m.media ? mediaBlock(m.media, cache, onView) : null,
        m.body ? h('span', { class: 'text' }, linkify(m.body)) : null,
        h('span', { class: 'meta' }, `${timeFmt.format(t)}${mine ? ` · ${stateText(state, m.reason)}` : ''}`,
          h('button', { type: 'button', class: 'reply', 'aria-label': `Reply to ${from}`, onclick: () => onReply(m) }, 'Reply'))),
    });
  }
  for (const p of c.pending.values()) {
    items.push({
      key: `cid:${p.cid}`,
      sig: `${p.state}\u0000${p.error || ''}\u0000${p.progress === undefined ? '' : p.progress >= 1 ? 'done' : 'up'}\u0000${p.retry ? 'r' : ''}`,
      make: () => h('li', { class: 'msg mine', 'data-cid': p.cid, 'data-state': p.state },
        linkify(p.body || ''), p.progress !== undefined ? h('progress', { class: 'upload', max: '1', value: String(p.progress), 'aria-label': 'Upload progress' }) : null,
        h('span', { class: 'meta' }, p.state === 'failed' ? `not sent${p.error ? `: ${p.error}` : ''}` : p.progress !== undefined && p.progress < 1 ? 'uploading…' : 'sending…',
          p.state === 'failed' && p.retry ? h('button', { type: 'button', class: 'retry', onclick: p.retry }, 'Retry') : null,
          p.state === 'failed' ? h('button', { type: 'button', class: 'remove', 'aria-label': 'Remove the message not sent', onclick: () => onRemove(p) }, 'Remove') : null)),
    });
  }
  return items;
}
