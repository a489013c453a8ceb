// The app: signs in (or resumes the cookie session), then keeps the
// conversation list and the open conversation in step with the server
// over MQTT, reloading what it may have missed after each reconnect.
import { Api } from './api.js';
import { Connection, newCid } from './conn.js';
import { Store } from './store.js';
import * as v from './views.js';

const h = v.h;

class App {
  constructor(root) {
    this.root = root;
    this.api = new Api();
    this.api.onSignedOut = () => this.showSignIn('You were signed out.');
    this.conn = null;
    this.store = null;
    this.drafts = new Map();
  }

  async boot() {
    if (await this.api.resume()) this.start();
    else this.showSignIn();
  }

  stop() {
    if (this.conn) this.conn.stop();
    this.conn = null;
    this.store = null;
  }

  showSignIn(error) {
    this.stop();
    document.title = 'edgechat';
    this.root.replaceChildren(v.signIn({
      error,
      onSignIn: async (u, p) => { await this.api.login(u, p); this.start(); },
      onRegister: async (u, p) => { await this.api.register(u, p); this.start(); },
    }));
  }

  start() {
    const store = new Store(this.api.userId);
    this.store = store;
    this.conn = new Connection(this.api);
    this.stateEl = h('span', { class: 'state', role: 'status', 'data-state': 'connecting' }, 'connecting…');
    this.listEl = h('nav', { 'aria-label': 'Conversation list' });
    this.titleEl = h('header', { id: 'conv-title' }, '');
    this.messagesEl = h('ol', { class: 'messages', 'aria-labelledby': 'conv-title', 'aria-live': 'polite' });
    this.input = h('textarea', { id: 'composer', 'aria-label': 'Message', placeholder: 'Write a message', rows: 1 });
    this.input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); this.send(); }
    });
    this.input.addEventListener('input', () => { if (store.current) this.drafts.set(store.current, this.input.value); });
    const composer = h('form', { class: 'composer', onsubmit: (ev) => { ev.preventDefault(); this.send(); } },
      this.input, h('button', { type: 'submit', class: 'primary' }, 'Send'));
    this.convPane = h('section', { class: 'conversation', 'aria-label': 'Conversation' },
      this.titleEl, this.messagesEl, composer);
    const peerInput = h('input', { id: 'new-chat', 'aria-label': 'Start a chat with (username)', placeholder: 'username', autocapitalize: 'none' });
    const newChat = h('form', { class: 'newchat', onsubmit: (ev) => { ev.preventDefault(); this.openPeer(peerInput); } },
      peerInput, h('button', { type: 'submit' }, 'Chat'));
    this.shell = h('div', { class: 'shell' },
      h('div', { class: 'topbar' }, h('span', { class: 'me' }, store.me), this.stateEl, h('span', { class: 'spacer' }),
        h('button', { type: 'button', onclick: () => this.api.logout() }, 'Sign out')),
      h('aside', { class: 'sidebar' }, newChat, this.listEl),
      this.convPane);
    this.root.replaceChildren(this.shell);
    this.errorEl = h('p', { class: 'error', role: 'alert' });
    newChat.after(this.errorEl);

    store.addEventListener('change', () => this.render());
    this.conn.addEventListener('state', (ev) => {
      this.stateEl.dataset.state = ev.detail;
      this.stateEl.textContent = { online: 'online', connecting: 'connecting…', offline: 'offline — reconnecting', error: 'error' }[ev.detail] || ev.detail;
      if (ev.detail === 'online') this.catchUp();
    });
    this.conn.addEventListener('newMessage', (ev) => this.live(ev.detail));
    this.conn.start();
    this.render();
  }

  // catchUp reloads what may have changed while the connection was down:
  // the conversation list (last messages, unread counts) and the open
  // conversation's newest page; everything merges by ID.
  async catchUp() {
    const store = this.store;
    try {
      const res = await this.api.conversations();
      if (store !== this.store) return;
      for (const item of res.conversations || []) {
        const c = store.conv(item.group ? { group: item.group } : { peer: item.peer });
        if (item.lastMessage) store.add(item.lastMessage, false);
        c.unread = store.current === c.key ? 0 : item.unread;
      }
      const open = store.current && store.convs.get(store.current);
      if (open) await this.loadPage(open, true);
      store.changed();
    } catch (e) {
      this.showError(e);
    }
  }

  live(m) {
    const store = this.store;
    if (!store || !m || !m.id) return;
    if (store.add(m, true)) {
      const c = store.convOf(m);
      if (c.key === store.current && m.from !== store.me) this.markRead(c);
      store.changed();
    }
  }

  async loadPage(c, newest) {
    const before = newest ? undefined : store_oldest(this.store, c);
    const res = await this.api.history(c, before);
    for (const m of res.messages || []) this.store.add(m, false);
    if (!newest) c.hasMore = !!res.hasMore;
    c.loaded = true;
  }

  async openPeer(input) {
    const peer = input.value.trim().toLowerCase();
    if (!peer) return;
    try {
      await this.api.user(peer);
    } catch (e) {
      this.showError(e.status === 404 ? new Error(`No user named ${peer}`) : e);
      return;
    }
    input.value = '';
    this.open(this.store.conv({ peer }));
  }

  async open(c) {
    const store = this.store;
    store.current = c.key;
    this.shell.classList.add('open');
    this.input.value = this.drafts.get(c.key) || '';
    store.changed();
    try {
      if (!c.loaded) await this.loadPage(c, true);
      this.markRead(c);
      store.changed();
    } catch (e) {
      this.showError(e);
    }
    this.input.focus();
  }

  markRead(c) {
    c.unread = 0;
    const last = c.last;
    if (last && last.from !== this.store.me) this.api.read(c, last.id).catch(() => {});
  }

  async send() {
    const store = this.store;
    const c = store && store.current && store.convs.get(store.current);
    const body = this.input.value.trim();
    if (!c || !body) return;
    const cid = newCid();
    store.addPending(c, cid, body);
    this.input.value = '';
    this.drafts.delete(c.key);
    store.changed();
    try {
      await this.conn.sendText(c, cid, body);
      // Committed; the stored copy (with its ID) replaces the pending one
      // when it comes back on user/{me}/newMessage.
      store.setPending(c, cid, 'sent');
    } catch (e) {
      store.setPending(c, cid, 'failed');
      this.showError(e);
    }
    store.changed();
  }

  showError(e) {
    if (this.errorEl) this.errorEl.textContent = e.message || String(e);
  }

  render() {
    const store = this.store;
    if (!store) return;
    this.listEl.replaceChildren(v.convList(store, (c) => this.open(c)));
    const c = store.current && store.convs.get(store.current);
    const unread = store.list().reduce((n, x) => n + x.unread, 0);
    document.title = unread ? `(${unread}) edgechat` : 'edgechat';
    if (!c) {
      this.titleEl.textContent = 'No conversation open';
      this.messagesEl.replaceChildren(h('li', { class: 'empty' }, 'Pick a conversation or start one.'));
      return;
    }
    this.titleEl.textContent = c.group ? `#${c.group}` : c.peer;
    const el = this.messagesEl;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    el.replaceChildren(...v.messageList(store, c));
    if (atBottom) el.scrollTop = el.scrollHeight;
  }
}

function store_oldest(store, c) {
  const list = store.sorted(c);
  return list.length ? list[0].id : undefined;
}

new App(document.getElementById('app')).boot();
