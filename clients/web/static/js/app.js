// The app: signs in (or resumes the cookie session), then keeps the
// conversation list and the open conversation in step with the server
// over MQTT, syncing what it missed after each reconnect.
import { Api, ApiError } from './api.js';
import { Connection, newCid } from './conn.js';
import { Store, cmpID, keyOfName, serverName } from './store.js';
import { MediaCache, fetchBlobURL, ready, refusedFile, upload } from './media.js';
import { GroupPanel, People } from './people.js';
import { Recorder, canRecord } from './voice.js';
import * as v from './views.js';

const h = v.h;

// MAX_BODY is the most bytes (UTF-8) a message's body may hold
// (docs/protocol.md, Message envelope).
const MAX_BODY = 8192;

class App {
  constructor(root) {
    this.root = root;
    this.api = new Api();
    this.api.onSignedOut = () => this.showSignIn('You were signed out.');
    this.api.onSignedInElsewhere = () => { if (!this.store && !this.resuming) this.boot(); };
    // A refresh answered another user's token (the browser's cookie is
    // theirs now): nothing of this page's user stays (stop), and the page
    // goes on as the user the browser is signed in as.
    this.api.onUserChanged = () => { this.stop(); this.start(); };
    this.conn = null;
    this.store = null;
    this.drafts = new Map();
    this.lastActive = Date.now();
    this.lastTyping = 0;
    this.heartbeat = 0;
    this.subscribed = new Set();
    this.catchUps = 0; // catch-ups started: a retrying one stops when a newer starts
    this.readEvents = 0; // conversation.read events taken (see loadLists)
    this.asking = new Set();
    this.shown = new Set(); // the notifications the page shows
    // Once for the page's life (start runs at every sign-in): heartbeats
    // only while the user is active, so that presence shows "inactive"
    // when they step away; what came into the open conversation while
    // the tab was hidden is read when it shows.
    for (const e of ['keydown', 'pointerdown', 'pointermove', 'focus']) {
      window.addEventListener(e, () => { this.lastActive = Date.now(); }, { passive: true });
    }
    // The browser's other tabs tell what they read (at once: the
    // server's conversation.read event follows the commit): a
    // conversation read in one tab is read in all.
    this.reads = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel('edgechat-read');
    if (this.reads) this.reads.onmessage = (ev) => this.readElsewhere(ev.data);
    // The user is active in another tab of the browser: the tab that
    // speaks for the browser (Connection.leads) heartbeats for it (at
    // once: a hidden tab's timers may be held back for a minute).
    // A mute (or unmute) made in another tab of the browser holds here
    // too: this tab's notifications of that conversation stop (start).
    this.muteTabs = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel('edgechat-mutes');
    if (this.muteTabs) {
      this.muteTabs.onmessage = (ev) => {
        const d = ev.data;
        const store = this.store;
        if (!store || !d || d.user !== store.me || typeof d.key !== 'string' || typeof d.until !== 'number') return;
        this.setMuted(d.key, d.until);
        store.changed();
      };
    }
    this.activity = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel('edgechat-active');
    if (this.activity) {
      this.activity.onmessage = (ev) => {
        const d = ev.data;
        if (this.store && this.conn && d && d.user === this.store.me && this.conn.leads()) this.beat();
      };
    }
    // A click on a push notification (the service worker) opens its
    // conversation here; a tab the worker opened for one names it in
    // the address (#open=...), read at sign-in.
    if ('serviceWorker' in navigator) {
      navigator.serviceWorker.addEventListener('message', (ev) => {
        const d = ev.data;
        if (d && d.type === 'open' && typeof d.conversationId === 'string') this.openNamed(d.conversationId);
      });
    }
    const params = new URLSearchParams(location.hash.slice(1));
    const hash = params.get('open');
    this.toOpen = hash || null;
    // A provider's sign-in that failed comes back with the error in the
    // address (#error=...&error_description=...): the sign-in page says why.
    this.signInError = params.get('error')
      ? `Sign-in through the provider failed: ${params.get('error_description') || params.get('error')}` : null;
    if (hash || this.signInError) history.replaceState(null, '', location.pathname + location.search);
    document.addEventListener('visibilitychange', () => {
      const store = this.store;
      const c = store && store.current && store.convs.get(store.current);
      if (!document.hidden && c && c.unread) { this.markRead(c); store.changed(); }
    });
  }

  async boot() {
    const waiting = () => this.root.replaceChildren(h('p', { class: 'boot', role: 'status', id: 'resuming' },
      'The server cannot be reached right now; trying again…'));
    this.resuming = true;
    let ok = false;
    try { ok = await this.api.resume(waiting); } finally { this.resuming = false; }
    const error = this.signInError;
    this.signInError = null; // said once
    if (ok) this.start();
    else if (!this.store) this.showSignIn(error);
  }

  stop() {
    if (this.groupPanel) this.groupPanel.close();
    this.groupPanel = null;
    // A picture open in the viewer is the user's: the sign-in screen
    // (signed out here or from elsewhere) must not show it.
    for (const d of document.querySelectorAll('dialog.viewer')) { d.close(); d.remove(); }
    // So are the notifications of its messages the page showed.
    for (const n of [...this.shown]) n.close();
    this.shown.clear();
    // A voice note being recorded is dropped, the microphone turned off.
    if (this.cancelRecording) this.cancelRecording();
    this.cancelRecording = null;
    if (this.media) this.media.clear();
    this.media = null;
    clearInterval(this.heartbeat);
    clearInterval(this.clock);
    this.subscribed.clear();
    if (this.conn) this.conn.stop();
    this.conn = null;
    // So are the messages not sent yet that the tab kept for a reload.
    if (this.store) {
      try { sessionStorage.removeItem(`edgechat-pending-${this.store.me}`); } catch { /* storage off */ }
    }
    this.savedPending = undefined;
    this.store = null;
    // What the user was writing is theirs: the next user of this tab
    // must not find it in the same conversation's composer.
    this.drafts.clear();
    this.replyTo = null;
  }

  async showSignIn(error) {
    this.stop();
    document.title = 'edgechat';
    const providers = await this.api.providers();
    this.root.replaceChildren(v.signIn({
      error,
      providers,
      onSignIn: async (u, p) => { await this.api.login(u, p); this.start(); },
      onRegister: async (u, p) => { await this.api.register(u, p); this.start(); },
    }));
  }

  start() {
    if (this.conn) this.stop(); // never two apps (connections, heartbeats) at once
    this.api.tellTabs(this.api.userId, 'signedIn'); // the browser's tabs signed out come back
    this.convsEl = null;
    this.shownConv = null;
    const store = new Store(this.api.userId);
    this.store = store;
    this.conn = new Connection(this.api);
    this.stateEl = h('span', { class: 'state', role: 'status', 'data-state': 'connecting' }, 'connecting…');
    this.listEl = h('nav', { 'aria-label': 'Conversation list' });
    this.titleEl = h('span', { id: 'conv-title' }, '');
    this.subEl = h('span', { class: 'sub', 'aria-live': 'polite' }, '');
    this.actionsEl = h('span', { class: 'actions' });
    this.actionsSig = null;
    this.people = new People(this.api);
    this.people.addEventListener('change', () => store.changed());
    this.contactsEl = h('div', { class: 'contacts-list' });
    this.contactsSig = null;
    this.messagesEl = h('ol', { class: 'messages', 'aria-labelledby': 'conv-title', 'aria-live': 'polite' });
    this.input = h('textarea', { id: 'composer', 'aria-label': 'Message', placeholder: 'Write a message', rows: 1 });
    this.input.addEventListener('keydown', (ev) => {
      // An Enter that confirms an input method's candidate (Japanese,
      // Chinese, Korean) is the input method's: it sent half a message.
      if (ev.isComposing || ev.keyCode === 229) return;
      if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); this.send(); }
    });
    this.input.addEventListener('input', () => {
      if (!store.current) return;
      this.drafts.set(store.current, this.input.value);
      this.typing();
    });
    this.media = new MediaCache(this.api);
    const file = h('input', { type: 'file', id: 'attach', class: 'visually-hidden' });
    file.addEventListener('change', () => {
      for (const f of file.files) this.sendFile(f);
      file.value = '';
    });
    const sendBtn = h('button', { type: 'submit', class: 'primary' }, 'Send');
    const record = canRecord() ? this.recordButton() : null;
    // With no conversation open there is nowhere to send to: the
    // composer's controls are disabled until one is (render).
    this.composerControls = [this.input, file, sendBtn, record].filter(Boolean);
    const composer = h('form', { class: 'composer', onsubmit: (ev) => { ev.preventDefault(); this.send(); } },
      h('label', { for: 'attach', class: 'attach', title: 'Attach a file' }, 'Attach'), file,
      record, this.input, sendBtn);
    this.replyEl = h('div', { class: 'replying', hidden: true });
    this.convPane = h('section', { class: 'conversation', 'aria-label': 'Conversation' },
      h('header', {}, h('button', { type: 'button', class: 'back', 'aria-label': 'Back to the conversation list',
        // The conversation is closed, not only hidden: what comes into it
        // now is unread (it was read at once, and the sender told so).
        onclick: () => {
          this.shell.classList.remove('open');
          this.setReply(null);
          store.current = null;
          store.changed();
        } }, '←'), h('span', {}, this.titleEl, this.subEl), this.actionsEl),
      this.messagesEl, this.replyEl, composer);
    this.messagesEl.addEventListener('scroll', () => this.maybeLoadOlder());
    const people = h('datalist', { id: 'people' });
    const peerInput = h('input', { id: 'new-chat', 'aria-label': 'Start a chat with (username)', placeholder: 'username', autocapitalize: 'none', list: 'people', autocomplete: 'off' });
    let searchTimer = 0;
    peerInput.addEventListener('input', () => {
      clearTimeout(searchTimer);
      const q = peerInput.value.trim();
      if (!q) return;
      searchTimer = setTimeout(() => this.api.search(q).then((res) => {
        people.replaceChildren(...(res.users || []).filter((u) => u.userId !== store.me)
          .map((u) => h('option', { value: u.userId }, u.displayName && u.displayName !== u.userId ? u.displayName : null)));
      }).catch(() => {}), 250);
    });
    const newChat = h('form', { class: 'newchat', onsubmit: (ev) => { ev.preventDefault(); this.openPeer(peerInput); } },
      peerInput, people, h('button', { type: 'submit' }, 'Chat'));
    const groupName = h('input', { id: 'group-name', 'aria-label': 'Group name', placeholder: 'group name' });
    const groupMembers = h('input', { id: 'group-members', 'aria-label': 'Members (usernames, comma-separated)', placeholder: 'bob, carol', autocapitalize: 'none' });
    const newGroup = h('details', { class: 'newgroup' }, h('summary', {}, 'New group'),
      h('form', { class: 'newgroup', onsubmit: (ev) => { ev.preventDefault(); this.createGroup(groupName, groupMembers); } },
        groupName, groupMembers, h('button', { type: 'submit', id: 'create-group' }, 'Create group')));
    const currentPw = h('input', { id: 'current-password', type: 'password', 'aria-label': 'Current password',
      placeholder: 'current password', autocomplete: 'current-password', required: true });
    const newPw = h('input', { id: 'new-password', type: 'password', 'aria-label': 'New password (8 characters or more)',
      placeholder: 'new password', autocomplete: 'new-password', minlength: '8', required: true });
    const pwStatus = h('p', { class: 'status', id: 'password-status', role: 'status' });
    const account = h('details', { class: 'account-panel', id: 'account-panel' }, h('summary', {}, 'Change password'),
      h('form', { class: 'password', onsubmit: (ev) => { ev.preventDefault(); this.changePassword(currentPw, newPw, pwStatus); } },
        currentPw, newPw, h('button', { type: 'submit', id: 'change-password' }, 'Change password'), pwStatus));
    this.sessionsEl = h('ul', { class: 'sessions', 'aria-label': 'Sessions' });
    const sessions = h('details', { class: 'account-panel', id: 'sessions-panel',
      ontoggle: (ev) => { if (ev.target.open) this.loadSessions(); } }, h('summary', {}, 'Sessions'), this.sessionsEl);
    this.shell = h('div', { class: 'shell' },
      h('div', { class: 'topbar' }, h('span', { class: 'me' }, store.me), this.stateEl, h('span', { class: 'spacer' }),
        typeof Notification !== 'undefined' && Notification.permission === 'default'
          ? h('button', { type: 'button', id: 'notifications', onclick: (ev) => {
            Notification.requestPermission().then((p) => { if (p === 'granted') this.enablePush(); })
              .finally(() => ev.target.remove());
          } }, 'Enable notifications') : null,
        h('button', { type: 'button', id: 'sign-out', onclick: () => this.api.logout().catch((e) => this.showError(e)) }, 'Sign out'),
        h('button', { type: 'button', id: 'sign-out-everywhere', title: 'Sign out on every browser and device',
          onclick: () => this.api.logoutAll().catch((e) => this.showError(e)) }, 'Sign out everywhere')),
      h('aside', { class: 'sidebar' }, newChat, newGroup,
        h('details', { class: 'contacts-panel', id: 'contacts-panel' }, h('summary', {}, 'Contacts'), this.contactsEl), account, sessions, this.listEl),
      this.convPane);
    this.root.replaceChildren(this.shell);
    this.errorEl = h('p', { class: 'error', role: 'alert' });
    newChat.after(this.errorEl);
    // On a phone's narrow screen the open conversation shows alone (the
    // sidebar hidden): the error shows above its composer there.
    this.convErrorEl = h('p', { class: 'error conv-error', role: 'alert' });
    this.replyEl.before(this.convErrorEl);

    // One render per frame however many changes came in it (1,000
    // retained presence messages arrive at once after a reconnect). A
    // hidden tab runs no animation frames: a timer draws it (its title
    // counts what is unread in the tab strip), also when it was hidden
    // with a frame still to come.
    store.addEventListener('change', () => {
      if (this.renderQueued) return;
      this.renderQueued = true;
      const draw = () => {
        if (!this.renderQueued) return;
        this.renderQueued = false;
        this.render();
      };
      requestAnimationFrame(draw);
      setTimeout(draw, 250);
    });
    let restored = this.restorePending();
    this.conn.addEventListener('state', (ev) => {
      if (ev.detail === 'online' && restored.length) {
        for (const r of restored) this.publish(r.c, r.cid, () => this.conn.sendText(r.c, r.cid, r.body, r.replyTo));
        restored = [];
      }
      this.stateEl.dataset.state = ev.detail;
      this.stateEl.dataset.device = this.conn.device; // the {deviceID} of its client ID (the tests look)
      this.stateEl.dataset.leader = String(this.conn.leads());
      this.stateEl.textContent = { online: 'online', connecting: 'connecting…', offline: 'offline — reconnecting', error: 'error' }[ev.detail] || ev.detail;
      if (ev.detail === 'online') this.catchUp();
    });
    this.conn.addEventListener('newMessage', (ev) => this.live(ev.detail));
    this.conn.addEventListener('typing', (ev) => this.typed(ev.detail));
    this.conn.addEventListener('receipts', (ev) => {
      const r = ev.detail;
      if (r && r.peer && r.upTo && (r.type === 'read' || r.type === 'delivered')) {
        store.receipt(r.peer, r.type, r.upTo);
        store.changed();
      }
    });
    this.conn.addEventListener('presence', (ev) => {
      store.presence.set(ev.detail.uid, ev.detail);
      store.changed();
    });
    this.conn.addEventListener('events', (ev) => {
      const e = ev.detail;
      if (e && e.type === 'undeliverable' && e.id && (e.to || e.group)) {
        // Another region refused one of my messages for good: a direct
        // one ("to"), or one to a group its home refused ("group").
        const m = store.conv(e.group ? { group: e.group } : { peer: e.to }).messages.get(e.id);
        if (m) { m.status = 'undeliverable'; m.reason = e.reason; store.changed(); }
        return;
      }
      if (e && e.type === 'conversation.read' && e.data && typeof e.data.upTo === 'string' && (e.data.peer || e.data.group)) {
        // Read on one of the user's devices (a phone, another browser,
        // this tab): the server's count after that read, given in
        // order with the messages, so those that came before it count
        // as it says and those after it come after.
        const d = e.data;
        const c = store.convs.get(d.group ? `g:${d.group}` : `d:${d.peer}`);
        if (c) {
          if (!c.readUpTo || cmpID(d.upTo, c.readUpTo) > 0) c.readUpTo = d.upTo;
          if (typeof d.unread === 'number') c.unread = Math.min(c.unread, d.unread);
          c.readEvent = ++this.readEvents;
          store.changed();
        }
        return;
      }
      if (e && e.type === 'session.created') {
        // Signed in somewhere else: an open session list shows it.
        if (this.sessionsEl && this.sessionsEl.closest('details').open) this.loadSessions();
        return;
      }
      if (ev.detail && String(ev.detail.type).startsWith('group.')) {
        const d = ev.detail.data || {};
        if (d.gid && (e.type === 'group.created' || (e.type === 'group.member_added' &&
            (d.uid === store.me || (Array.isArray(d.uids) && d.uids.includes(store.me)))))) {
          // I joined: subscribe to its topics again, even if I was
          // subscribed before. Removed a moment ago and added back, the
          // server dropped them with the removal, and the lists read
          // since may never have shown the group gone.
          this.subscribed.delete(`group/${d.gid}/newMessage`);
          this.subscribed.delete(`group/${d.gid}/typing`);
        }
        // The list again once the group's topics are subscribed: what was
        // sent to a group I just joined before that is in it.
        // (A node that cannot reach its leader answers lists 503: tried
        // again, as the catch-up is.)
        this.untilReadable(() => this.loadGroups().then(() => this.loadLists(false)), () => store === this.store);
        const gid = ev.detail.data && ev.detail.data.gid;
        if (this.groupPanel && this.groupPanel.isOpen && this.groupPanel.gid === gid) this.groupPanel.refresh();
      }
    });
    // Heartbeats while the user is active in a tab of the app: one tab
    // of the browser sends them (Connection.leads), the others tell it
    // when their user is active.
    const meta = document.querySelector('meta[name="edgechat-heartbeat"]');
    this.every = Math.max(100, Number(meta && meta.content) || 10000);
    this.lastBeat = 0;
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.lastActive >= 60000 || document.hidden) return;
      if (this.conn.leads()) this.beat();
      else if (this.activity) this.activity.postMessage({ user: store.me });
    }, this.every);
    // "last seen 2 minutes ago" ages while nothing else changes: draw
    // again now and then (a render rewrites only what differs).
    this.clock = setInterval(() => store.changed(), Math.min(30000, Math.max(1000, this.every)));
    const leader = () => { this.stateEl.dataset.leader = String(this.conn.leads()); }; // the tests look
    this.conn.addEventListener('leader', leader);
    this.loadLists().catch((e) => this.showError(e));
    // An account a provider created has no password to change (its
    // sign-in is the provider's): no form for it.
    this.api.identities().then((ids) => { if (ids && ids.password === false) account.hidden = true; }).catch(() => {});
    this.untilReadable(() => this.people.load(), () => store === this.store);
    this.conn.start().then(() => {
      if (typeof Notification !== 'undefined' && Notification.permission === 'granted') this.enablePush();
    });
    this.render();
    if (this.toOpen) {
      const name = this.toOpen;
      this.toOpen = null;
      this.openNamed(name);
    }
  }

  // openNamed opens the conversation a push names (user:{uid},
  // group:{gid}), once the app runs.
  openNamed(name) {
    const store = this.store;
    if (!store) { this.toOpen = name; return; }
    const [kind, id] = [name.slice(0, name.indexOf(':')), name.slice(name.indexOf(':') + 1)];
    if (!id || (kind !== 'user' && kind !== 'group')) return;
    this.open(store.conv(kind === 'user' ? { peer: id } : { group: id }));
    this.follow();
  }

  // follow subscribes to what the open app shows: each group's topics and
  // the presence of each direct peer (once per connection).
  async follow() {
    const store = this.store;
    const want = [];
    for (const gid of store.groups.keys()) want.push(`group/${gid}/newMessage`, `group/${gid}/typing`);
    for (const c of store.convs.values()) if (c.peer && c.peer !== store.me) want.push(`presence/${c.peer}`);
    const fresh = want.filter((t) => !this.subscribed.has(t) && !this.asking.has(t));
    fresh.forEach((t) => this.asking.add(t));
    try {
      for (const t of await this.conn.subscribe(fresh)) this.subscribed.add(t);
    } finally {
      fresh.forEach((t) => this.asking.delete(t));
    }
  }

  async loadGroups() {
    const store = this.store;
    const res = await this.api.groups();
    if (store !== this.store) return;
    this.applyGroups(res);
    await this.follow();
  }

  // applyGroups takes the answer of GET /user/groups: names, and the
  // groups I left (their topics go).
  applyGroups(res) {
    const store = this.store;
    const now = new Set();
    for (const g of res.groups || []) {
      store.groups.set(g.groupId, { name: g.name });
      now.add(g.groupId);
      store.conv({ group: g.groupId });
    }
    for (const gid of [...store.groups.keys()]) {
      if (!now.has(gid)) {
        store.groups.delete(gid);
        store.convs.delete(`g:${gid}`); // I left or was removed
        if (store.current === `g:${gid}`) store.current = null;
        this.conn.unsubscribe([`group/${gid}/newMessage`, `group/${gid}/typing`]);
        this.subscribed.delete(`group/${gid}/newMessage`);
        this.subscribed.delete(`group/${gid}/typing`);
      }
    }
  }

  // loadLists reads my groups and the conversation list over HTTP and
  // draws them (before the MQTT connection is up, too).
  async loadLists(withGroups = true) {
    const store = this.store;
    // A read told (conversation.read) after the list was asked for is
    // newer than the list's count of that conversation, which the
    // server may have made before the read: the count the event gave
    // (and the messages since) stands.
    const asked = this.readEvents;
    const [groups, res] = await Promise.all([withGroups ? this.api.groups() : null, this.api.conversations()]);
    if (store !== this.store) return;
    if (groups) this.applyGroups(groups);
    for (const item of res.conversations || []) {
      const c = store.conv(item.group ? { group: item.group } : { peer: item.peer });
      if (item.lastMessage) store.add(item.lastMessage, false);
      // How far the peer read: the ticks of my messages survive a reload.
      if (item.peer && item.peerRead) store.receipt(item.peer, 'read', item.peerRead);
      if ((c.readEvent || 0) > asked) continue;
      c.unread = store.current === c.key && !document.hidden ? 0 : listUnread(store, c, item);
    }
    store.changed();
  }

  async createGroup(nameInput, membersInput) {
    const name = nameInput.value.trim();
    const members = membersInput.value.split(/[\s,]+/).map((x) => x.trim().toLowerCase()).filter(Boolean);
    this.clearError();
    if (!name) { // the server would refuse it: say so, rather than do nothing
      this.showError(new Error('A group needs a name: type one in "group name".'));
      nameInput.focus();
      return;
    }
    // The same group asked for again after a failure (its answer may have
    // been lost after the server made it) goes under the same key, so
    // that the server answers that group instead of making a second.
    const request = JSON.stringify([name, members]);
    if (!this.groupTry || this.groupTry.request !== request) this.groupTry = { request, key: `g-${newCid()}` };
    try {
      const g = await this.api.createGroup(name, members, this.groupTry.key);
      this.groupTry = null;
      nameInput.value = '';
      membersInput.value = '';
      nameInput.closest('details').open = false;
      await this.loadGroups();
      this.open(this.store.conv({ group: g.groupId }));
    } catch (e) {
      this.showError(e);
    }
  }

  // loadSessions lists where the user is signed in, each with a button
  // that signs it out (this browser's has none: "Sign out" does that).
  async loadSessions() {
    try {
      const res = await this.api.sessions();
      const label = (x) => {
        const what = [x.device, x.agent].filter(Boolean).join(' — ') || 'unknown client';
        return `${what.length > 80 ? `${what.slice(0, 79)}…` : what}, last used ${new Date(x.lastUsedAt).toLocaleString()}`;
      };
      this.sessionsEl.replaceChildren(...(res.sessions || []).map((x) => h('li', { 'data-session': x.id },
        h('span', { class: 'what' }, label(x)),
        x.current ? h('span', { class: 'this' }, 'this browser')
          : h('button', { type: 'button', class: 'end-session', 'aria-label': `Sign out ${label(x)}`,
            onclick: () => this.api.endSession(x.id).then(() => this.loadSessions()).catch((e) => this.showError(e)) }, 'Sign out'))));
    } catch (e) {
      this.showError(e);
    }
  }

  // changePassword: every other browser and device is signed out by the
  // server; this page goes on with the tokens the change answered (its
  // MQTT connection, closed with the others, comes back with them).
  async changePassword(currentInput, newInput, status) {
    status.textContent = '';
    try {
      await this.api.changePassword(currentInput.value, newInput.value);
      currentInput.value = '';
      newInput.value = '';
      if (this.conn.client) this.conn.client.options.password = this.api.token;
      status.textContent = 'Password changed. Every other session is signed out.';
    } catch (e) {
      const why = {
        forbidden: 'The current password is wrong.',
        invalid_password: 'The new password must be 8 to 128 bytes long.',
        rate_limited: 'Too many attempts; try again later.',
        password_changed: 'The password was just changed elsewhere; sign in again.',
      }[e.code];
      status.textContent = why || e.message || String(e);
    }
  }

  // beat sends a presence heartbeat for the browser's tabs, at most one
  // every half interval (this tab's timer and the others' word both ask).
  beat() {
    const now = Date.now();
    if (now - this.lastBeat < this.every / 2) return;
    this.lastBeat = now;
    this.conn.publish(`presence/${this.store.me}/heartbeat`);
  }

  typing() {
    const c = this.store.current && this.store.convs.get(this.store.current);
    if (!c || Date.now() - this.lastTyping < 3000) return;
    this.lastTyping = Date.now();
    this.conn.publish(c.group ? `group/${c.group}/typing` : `user/${c.peer}/typing`, { state: 'typing' });
  }

  typed(t) {
    const store = this.store;
    if (!t || !t.from || t.from === store.me) return;
    const key = t.group ? `g:${t.group}` : `d:${t.from}`;
    if (t.state === 'typing') {
      store.typing.set(key, { from: t.from, until: Date.now() + 6000 });
      setTimeout(() => store.changed(), 6100);
    } else {
      store.typing.delete(key);
    }
    store.changed();
  }

  // maybeLoadOlder reads the page before the oldest message shown when
  // the reader scrolls to the top. Each conversation loads its own (a
  // slow page of one does not hold up another's), and the reader's place
  // is kept only in the view the page was asked from: another
  // conversation shown meanwhile keeps its own.
  maybeLoadOlder() {
    const store = this.store;
    const c = store && store.current && store.convs.get(store.current);
    if (!c || c.loadingOlder || !c.hasMore || this.messagesEl.scrollTop > 40) return;
    c.loadingOlder = true;
    const before = this.messagesEl.scrollHeight;
    const view = this.shownView;
    this.loadPage(c, false).then(() => {
      if (store !== this.store || view !== this.shownView) { store.changed(); return; }
      this.render(); // now, not at the next frame: the scroll position is set from its result
      this.messagesEl.scrollTop = this.messagesEl.scrollHeight - before; // keep the reader's place
    }).catch((e) => this.showError(e)).finally(() => { c.loadingOlder = false; });
  }

  // catchUp brings the page up to date after each (re)connect. It
  // subscribes first (the user's topics are, when the connection says
  // online; then every group's), then reads, so that whatever is
  // committed meanwhile comes live or in the reads, never in neither.
  // With a sync cursor from an earlier connection it pages
  // /chat/sync from it: every message committed since, of every
  // conversation, merges by ID (a newest page alone left a hole when more
  // than a page came, and conversations not open missed all but their
  // last). Without one (the first connection) the open conversation's
  // newest page is read and the others are read when opened. Then the
  // conversation list, for unread counts. A node of a cluster that cannot
  // reach its leader answers these reads 503: tried again, backing off,
  // until they pass or a newer connection's catch-up takes over.
  async catchUp() {
    const store = this.store;
    const round = ++this.catchUps;
    this.subscribed.clear(); // a new connection (clean session)
    const wanted = () => store === this.store && round === this.catchUps;
    const loaded = await this.untilReadable(async () => {
      await this.loadGroups(); // and their topics, before any read
      if (!wanted()) return;
      const synced = !!store.cursor;
      if (synced) {
        await this.syncPages(store.cursor, (msgs, cursor) => {
          this.merge(msgs);
          store.cursor = cursor;
        }, wanted);
      } else {
        // What each conversation holds may end before a gap: read anew.
        for (const c of store.convs.values()) { c.loaded = false; c.stale = true; }
      }
      if (!wanted()) return;
      await this.loadLists(false);
      const open = store.current && store.convs.get(store.current);
      if (open && !open.loaded) await this.loadPage(open, true);
      if (open && !document.hidden) this.markRead(open);
      store.changed();
    }, wanted);
    if (!loaded || !wanted()) return;
    // The mutes, made here or on another device meanwhile (the server
    // tells no device of them).
    this.untilReadable(() => this.loadMutes(), wanted);
    // Presence of peers the list brought.
    await this.follow().catch((e) => this.showError(e));
    if (!store.cursor) this.findSyncEnd(store, round).catch(() => {});
  }

  // syncPages pages /chat/sync from cursor to its end, handing each
  // page's messages and next cursor to take while wanted() holds.
  async syncPages(cursor, take, wanted) {
    for (;;) {
      const res = await this.api.sync(cursor);
      if (!wanted()) return;
      const msgs = res.messages || [];
      if (res.cursor) cursor = res.cursor;
      take(msgs, cursor);
      if (!res.hasMore || !msgs.length) return;
    }
  }

  // merge adds what a sync brought: counted unread as live messages are
  // (the list read after it sets the server's counts), receipts
  // "delivered" for the newest of each peer, no notifications.
  merge(msgs) {
    const store = this.store;
    const newest = new Map();
    for (const m of msgs) {
      if (!m || !m.id || !store.add(m, true)) continue;
      if (!m.group && m.from !== store.me) newest.set(m.from, m.id);
    }
    if (!this.conn.leads()) return; // the tab that speaks for the browser tells
    for (const [peer, id] of newest) this.conn.publish(`user/${peer}/receipts`, { type: 'delivered', upTo: id });
  }

  // findSyncEnd finds where the sync stream ends now, after the first
  // connection's catch-up: the cursor the next reconnect syncs from. The
  // messages on the way are not kept (the reads covered them). The cursor
  // counts only if the connection stayed up meanwhile (no round since):
  // what came after it was delivered live. (It asks the server,
  // GET /chat/sync/end, rather than keep a cursor from an earlier load,
  // which may be ahead of a restored server; a server older than that
  // call is paged from the beginning.)
  async findSyncEnd(store, round) {
    let end = null;
    const wanted = () => store === this.store && round === this.catchUps;
    await this.untilReadable(async () => {
      end = await this.api.syncEnd();
      if (end === null && wanted()) await this.syncPages('', (_, cursor) => { end = cursor; }, wanted);
    }, wanted);
    if (end && wanted() && this.conn.state === 'online' && !store.cursor) {
      store.cursor = end;
      this.stateEl.dataset.synced = 'true'; // what the tests wait for
    }
  }

  // untilReadable runs read and, while it fails with 503 (a node of a
  // cluster that cannot reach its leader cannot promise its reads hold
  // everything committed), runs it again, backing off 0.5 to 10 s, as
  // long as wanted() says it is still wanted. The error shown while it
  // retries is cleared when it passes. It reports whether read passed.
  async untilReadable(read, wanted) {
    let failed = '';
    for (let delay = 500; ; delay = Math.min(2 * delay, 10000)) {
      try {
        await read();
        if (failed && this.errorEl && this.errorEl.textContent === failed) this.clearError();
        return true;
      } catch (e) {
        this.showError(e);
        if (!(e instanceof ApiError) || e.status !== 503) return false;
        failed = this.errorEl ? this.errorEl.textContent : '';
      }
      await new Promise((done) => setTimeout(done, delay));
      if (!wanted()) return false;
    }
  }

  live(m) {
    const store = this.store;
    if (!store || !m || !m.id) return;
    if (store.add(m, true)) {
      const c = store.convOf(m);
      store.typing.delete(c.key);
      if (!m.group && m.from !== store.me && this.conn.leads()) {
        this.conn.publish(`user/${m.from}/receipts`, { type: 'delivered', upTo: m.id });
      }
      if (c.key === store.current && m.from !== store.me && !document.hidden) this.markRead(c);
      if (m.from !== store.me && document.hidden) this.notify(c, m);
      if (c.peer) this.follow();
      store.changed();
    }
  }

  // loadPage reads c's newest page of history, or the page before the
  // oldest message shown. The newest page of a stale conversation (one
  // that missed messages with no sync to bring them) drops what it held
  // from before the page when more came than a page holds: a gap may lie
  // between (scrolling back reads it).
  async loadPage(c, newest) {
    const before = newest ? undefined : store_oldest(this.store, c);
    const stale = newest && c.stale;
    const res = await this.api.history(c, before);
    const msgs = res.messages || [];
    if (stale && res.hasMore && msgs.length) {
      const oldest = msgs[msgs.length - 1].id; // newest first
      for (const id of [...c.messages.keys()]) if (cmpID(id, oldest) < 0) c.messages.delete(id);
      c.order = null;
      c.hasMore = true;
    }
    for (const m of msgs) this.store.add(m, false);
    if (!newest) c.hasMore = !!res.hasMore;
    if (stale) c.stale = false;
    c.loaded = true;
  }

  async openPeer(input) {
    const peer = input.value.trim().toLowerCase();
    if (!peer) return;
    this.clearError();
    let profile;
    try {
      profile = await this.api.user(peer);
    } catch (e) {
      // The name stays in the box, to try again. A 503 for a user of
      // another region: its link is down and this region has no copy of
      // the profile.
      const at = peer.indexOf('@');
      if (e.status === 404) this.showError(new Error(`No user named ${peer}`));
      else if (e.status === 503 && at > 0) this.showError(new Error(`The region ${peer.slice(at + 1)} cannot be reached now: try ${peer} again in a moment`));
      else if (e.status === 503) this.showError(new Error(`The server cannot answer now: try ${peer} again in a moment`));
      else this.showError(e);
      return;
    }
    // An erased account answers its tombstone (deleted: true): the
    // server refuses every message to it.
    if (profile && profile.deleted) {
      this.showError(new Error(`${peer} deleted their account`));
      return;
    }
    input.value = '';
    // The user's ID as the server names it (bob, not bob@eu typed in
    // eu): the messages of the chat are filed under it.
    const uid = profile && typeof profile.userId === 'string' && profile.userId ? profile.userId : peer;
    this.open(this.store.conv({ peer: uid }));
    this.follow();
  }

  async open(c) {
    const store = this.store;
    this.clearError();
    if (store.current !== c.key) this.setReply(null);
    store.current = c.key;
    this.enableComposer(true); // now, not at the next frame: the user may type at once
    this.shell.classList.add('open');
    this.input.value = this.drafts.get(c.key) || '';
    store.changed();
    this.input.focus();
    // A node that cannot reach its leader answers the newest page 503:
    // tried again until it passes or another conversation is opened.
    await this.untilReadable(async () => {
      if (!c.loaded) await this.loadPage(c, true);
      this.markRead(c);
      store.changed();
    }, () => store === this.store && store.current === c.key);
  }

  // enableComposer enables the composer's controls while a conversation
  // is open, and disables them while none is.
  enableComposer(on) {
    if (this.composerControls[0].disabled === !on) return;
    for (const el of this.composerControls) el.disabled = !on;
    this.input.placeholder = on ? 'Write a message' : 'Pick a conversation to write';
  }

  // markRead reads c up to its newest message, on the server too (once
  // per newest message: also when that is mine, sent from another
  // device after the peer's, which the server still counts unread).
  markRead(c) {
    c.unread = 0;
    const last = c.last;
    if (last) c.readUpTo = last.id;
    if (last && c.sentRead !== last.id) {
      c.sentRead = last.id;
      this.api.read(c, last.id).catch(() => { if (c.sentRead === last.id) c.sentRead = null; });
    }
    if (last && this.reads) this.reads.postMessage({ user: this.store.me, key: c.key, upTo: last.id });
  }

  // readElsewhere takes what another tab of this browser read: its
  // messages no longer count here (those above it, which came here
  // since, still do).
  readElsewhere(d) {
    const store = this.store;
    if (!store || !d || d.user !== store.me || typeof d.key !== 'string' || typeof d.upTo !== 'string') return;
    const c = store.convs.get(d.key);
    if (!c) return;
    if (!c.readUpTo || cmpID(d.upTo, c.readUpTo) > 0) c.readUpTo = d.upTo;
    let above = 0;
    for (const [id, m] of c.messages) if (m.from !== store.me && cmpID(id, c.readUpTo) > 0) above++;
    c.unread = Math.min(c.unread, above);
    store.changed();
  }

  async send() {
    const store = this.store;
    const c = store && store.current && store.convs.get(store.current);
    const body = this.input.value.trim();
    if (!c || !body) return;
    this.clearError();
    if (this.tooLongBody(body)) return; // kept in the composer, to be shortened
    const cid = newCid();
    const replyTo = this.replyTo && this.replyTo.conv === c.key ? this.replyTo.id : undefined;
    this.setReply(null);
    store.addPending(c, cid, body, { text: true, replyTo });
    this.savePending();
    this.input.value = '';
    this.drafts.delete(c.key);
    store.changed();
    await this.publish(c, cid, () => this.conn.sendText(c, cid, body, replyTo));
  }

  // publish sends the pending message cid of c (sendOnce publishes it).
  // Refused with 0x83 (not committed: no quorum, a timeout) or 0x97 (over
  // the user's publish rate, which every connection of the user shares:
  // it refills within a second) it is sent again with the same
  // cid, as protocol.md asks (the server keeps one message per cid),
  // backing off 0.5 to 4 s; failed for good it shows a
  // Retry that sends it again under the same cid: writing it anew, with a
  // new cid, stored it twice when the first had been committed after all.
  async publish(c, cid, sendOnce) {
    const store = this.store;
    for (let delay = 500; ; delay *= 2) {
      try {
        await sendOnce();
        // Committed; the stored copy (with its ID) replaces the pending one
        // when it comes back on user/{me}/newMessage.
        store.setPending(c, cid, 'sent');
        this.savePending();
        break;
      } catch (e) {
        if ((e.code === 0x83 || e.code === 0x97) && delay <= 4000 && store === this.store) {
          await new Promise((done) => setTimeout(done, delay));
          continue;
        }
        // 0x87 (not authorized; mqtt.js says "Not authorized") for a direct
        // message: the peer blocked me (the HTTP API answers 403 forbidden).
        // 0x90 (topic name invalid, "no such user") for a direct message:
        // the peer's account was deleted since the chat began; sending
        // again would be refused again, so no Retry.
        const gone = c.peer && (e.code === 0x90 || /0x90|topic name invalid/i.test(e.message));
        const err = gone ? new Error(`${c.peer} deleted their account`)
          : c.peer && /0x87|not authorized/i.test(e.message) ? new Error(`not allowed: ${c.peer} does not accept your messages`) : e;
        store.setPending(c, cid, 'failed', { error: err.message, retry: gone ? null : () => {
          if (store !== this.store) return;
          this.clearError();
          store.setPending(c, cid, 'pending', { error: '', retry: null });
          store.changed();
          this.publish(c, cid, sendOnce);
        } });
        this.showError(err);
        break;
      }
    }
    store.changed();
  }

  // sendFile uploads f with a progress bar in its pending message, waits
  // until the server has processed it, then sends the media message to
  // the open conversation, or to the one key names (a voice note goes
  // where it was recorded), with the composer's text, if any, as its
  // caption when that conversation is the open one.
  async sendFile(f, key) {
    const store = this.store;
    const to = key || (store && store.current);
    const c = store && to && store.convs.get(to);
    if (!c) return;
    this.clearError();
    const cid = newCid();
    let caption = '';
    if (to === store.current) {
      caption = this.input.value.trim();
      if (this.tooLongBody(caption)) return; // nothing sent, the file not uploaded
      this.input.value = '';
      this.drafts.delete(c.key);
    }
    store.addPending(c, cid, caption || f.name, { progress: 0 });
    store.changed();
    await this.uploadAndSend(store, c, cid, f, caption);
  }

  // uploadAndSend is sendFile's upload, wait and send (id: the file was
  // uploaded already, wait for it). A failure that trying again may mend
  // (the network, the server busy or away, processing not done in time)
  // leaves Retry on the pending message, which uploads the file again or
  // waits again for the one uploaded; a refusal of the file itself (too
  // large, a type the server does not take, refused by its processing)
  // leaves Remove only.
  async uploadAndSend(store, c, cid, f, caption, id) {
    try {
      if (!id) {
        store.setPending(c, cid, 'pending', { progress: 0 });
        // The message's cid names the upload too: Retry sends the same
        // key, so a file the server stored whose answer was lost is
        // answered, not stored twice.
        id = await upload(this.api, f, (p) => {
          store.setPending(c, cid, 'pending', { progress: p });
          const bar = this.messagesEl.querySelector(`[data-cid="${cid}"] progress`);
          if (bar) bar.value = p; // no full render per progress event
        }, `up-${cid}`);
        store.setPending(c, cid, 'pending', { progress: 1 });
        store.changed();
      }
      await ready(this.api, id);
    } catch (e) {
      const retry = refusedFile(e) ? null : () => {
        if (store !== this.store) return;
        this.clearError();
        store.setPending(c, cid, 'pending', { error: '', retry: null });
        store.changed();
        this.uploadAndSend(store, c, cid, f, caption, id);
      };
      store.setPending(c, cid, 'failed', { error: e.message, retry });
      this.showError(e);
      store.changed();
      return;
    }
    await this.publish(c, cid, () => this.conn.sendMedia(c, cid, id, caption));
  }

  // view opens the full file in a dialog: the cached URL when the
  // message shows it already (a picture without a preview), else read
  // for the dialog alone and revoked when it closes (files are large).
  async view(md) {
    const path = `/media/${encodeURIComponent(md.id)}`;
    try {
      const cached = this.media.now(path);
      const url = cached || await fetchBlobURL(this.api, path);
      let open = true;
      const d = v.viewer(md, url, () => {
        if (!open) return; // the close button, then the dialog's close event
        open = false;
        d.remove();
        if (!cached) URL.revokeObjectURL(url);
      });
      document.body.append(d);
      d.showModal();
    } catch (e) {
      this.showError(e);
    }
  }

  // enablePush registers the service worker and, when the server has Web
  // Push and the browser a push service, this browser as a push device,
  // so that messages reach it while no tab is open.
  async enablePush() {
    if (!('serviceWorker' in navigator)) return;
    const store = this.store;
    try {
      const reg = await navigator.serviceWorker.register('/sw.js');
      if (!('PushManager' in window)) return;
      // The server's VAPID key: 409 when Web Push is off there (nothing
      // to do); no answer, 429 or a 5xx (503 while a new cluster has not
      // made its key yet) is asked again, backing off 0.5 to 30 s, while
      // this session lasts.
      let vapid;
      for (let delay = 500; ; delay = Math.min(2 * delay, 30000)) {
        try {
          vapid = await this.api.vapidKey();
          break;
        } catch (e) {
          if (e instanceof ApiError && e.status < 500 && e.status !== 429) return; // Web Push off on this server
        }
        await new Promise((done) => setTimeout(done, delay));
        if (store !== this.store) return;
      }
      const key = Uint8Array.from(atob(vapid.publicKey.replace(/-/g, '+').replace(/_/g, '/')), (ch) => ch.charCodeAt(0));
      let sub = await reg.pushManager.getSubscription();
      // A subscription made with another VAPID key (a cluster made anew
      // or restored, its key rotated) is dropped: the push service
      // refuses (403) every push the cluster signs for it. (A browser
      // that does not say its subscription's key keeps it.)
      const had = sub && sub.options && sub.options.applicationServerKey;
      if (had && !sameKey(new Uint8Array(had), key)) {
        await sub.unsubscribe();
        sub = null;
      }
      if (!sub) {
        sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
      }
      try {
        await this.api.registerDevice(this.conn.browserDevice, sub.toJSON());
      } catch (e) {
        // The server refused this browser (too many devices, a bad
        // subscription): the user allowed notifications and expects
        // them, so the page says so.
        if (e instanceof ApiError && e.status !== 401) {
          this.showError(new Error(`Notifications will not reach this browser while the app is closed: ${e.message}`));
        }
        throw e;
      }
    } catch (e) {
      console.warn('web push not enabled:', e);
    }
  }

  // setReply shows (or clears) the message the next one replies to.
  setReply(m) {
    const c = this.store && this.store.current;
    this.replyTo = m ? { conv: c, id: m.id } : null;
    this.replyEl.hidden = !m;
    if (!m) { this.replyEl.replaceChildren(); return; }
    this.replyEl.replaceChildren(h('span', {}, `Replying to ${this.store.senderName(m.from)}: `, (m.body || m.type).slice(0, 80)),
      h('button', { type: 'button', 'aria-label': 'Cancel the reply', onclick: () => this.setReply(null) }, '×'));
    this.input.focus();
  }

  // notify shows a desktop notification for m while the tab is hidden
  // (when the user allowed them, and c is not muted); clicking it opens
  // the conversation.
  notify(c, m) {
    if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    if (this.store.mutedUntil(c)) return; // muted: it counts unread, silently
    const title = c.group ? `${this.store.senderName(m.from)} in ${v.convName(this.store, c)}` : m.from;
    const body = m.body || (m.media ? m.media.name || 'a file' : '');
    const n = new Notification(title, { body, tag: c.key });
    n.onclick = () => { window.focus(); this.open(c); n.close(); };
    this.shown.add(n); // closed at sign-out (stop)
    n.onclose = () => this.shown.delete(n);
  }

  // recordButton records a voice note: a first press starts, a second
  // stops and sends it to the open conversation.
  recordButton() {
    const rec = new Recorder();
    const btn = h('button', { type: 'button', id: 'record', class: 'record', 'aria-pressed': 'false', 'aria-label': 'Record a voice note' }, 'Voice');
    let timer = 0;
    let key = null; // the conversation the note is recorded in
    const show = (on) => {
      btn.setAttribute('aria-pressed', String(on));
      btn.setAttribute('aria-label', on ? 'Stop recording and send' : 'Record a voice note');
      btn.textContent = on ? 'Stop 0:00' : 'Voice';
      clearInterval(timer);
      delete btn.dataset.seconds;
      if (!on) return;
      const started = Date.now();
      btn.dataset.seconds = '0';
      timer = setInterval(() => { // how long the note is so far
        const sec = Math.floor((Date.now() - started) / 1000);
        btn.dataset.seconds = String(sec);
        btn.textContent = `Stop ${Math.floor(sec / 60)}:${String(sec % 60).padStart(2, '0')}`;
      }, 250);
    };
    this.cancelRecording = () => { rec.cancel(); show(false); };
    btn.addEventListener('click', async () => {
      try {
        if (!rec.recording) {
          if (!this.store || !this.store.current) return;
          key = this.store.current;
          await rec.start();
          show(true);
          return;
        }
        show(false);
        const f = await rec.stop();
        if (f) this.sendFile(f, key);
      } catch (e) {
        rec.cancel();
        show(false);
        this.showError(e.name === 'NotAllowedError' ? new Error('The microphone is not allowed for this page.') : e);
      }
    });
    return btn;
  }

  // openGroupInfo shows the open group's members and roles.
  openGroupInfo(gid) {
    if (this.groupPanel) this.groupPanel.close();
    const store = this.store;
    this.groupPanel = new GroupPanel(this.api, gid, store.me, {
      search: (q) => this.api.search(q).then((res) => (res.users || []).filter((u) => u.userId !== store.me)),
      onLeft: () => this.loadGroups().then(() => store.changed()).catch((e) => this.showError(e)),
    });
    this.groupPanel.open().catch((e) => this.showError(e));
  }

  // loadMutes reads which conversations are muted (GET /user/me/mutes).
  async loadMutes() {
    const store = this.store;
    const res = await this.api.mutes();
    if (store !== this.store) return;
    store.mutes.clear();
    for (const m of res.mutes || []) {
      const key = keyOfName(m.conversation || '');
      if (key) this.setMuted(key, m.until ? Date.parse(m.until) : Infinity);
    }
    store.changed();
  }

  // setMuted keeps c's mute (until, ms; Infinity: until unmuted; 0: not
  // muted) and draws the page again when a mute ends.
  setMuted(key, until) {
    const store = this.store;
    if (until) store.mutes.set(key, until); else store.mutes.delete(key);
    const left = until - Date.now();
    if (until !== Infinity && left > 0 && left < 2 ** 31) setTimeout(() => store.changed(), left + 50);
  }

  // muteControl is the open conversation's mute menu: mute for an hour,
  // eight hours or until unmuted, or unmute (PUT and DELETE
  // /user/me/mutes/{conversation}). A muted conversation shows no
  // notifications of the page and is not pushed.
  muteControl(c) {
    const store = this.store;
    const until = store.mutedUntil(c);
    const opt = (value, text) => h('option', { value }, text);
    const state = !until ? opt('', 'Notifications on')
      : opt('keep', until === Infinity ? 'Muted' : `Muted until ${new Date(until).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`);
    const sel = h('select', { id: 'mute', 'aria-label': 'Notifications of this conversation', 'data-muted': String(!!until) },
      state, until ? opt('', 'Unmute') : null,
      opt('1h', 'Mute for 1 hour'), opt('8h', 'Mute for 8 hours'), opt('always', 'Mute until I unmute'));
    sel.value = until ? 'keep' : '';
    sel.addEventListener('change', async () => {
      const what = sel.value;
      if (what === 'keep' || (!until && what === '')) return;
      sel.disabled = true;
      this.clearError();
      try {
        let to = 0;
        if (what === '') {
          await this.api.unmute(serverName(c));
        } else {
          const end = what === 'always' ? 0 : Date.now() + (what === '1h' ? 1 : 8) * 3600 * 1000;
          const res = await this.api.mute(serverName(c), end ? new Date(end).toISOString() : undefined);
          to = res && res.until ? Date.parse(res.until) : Infinity;
        }
        if (store === this.store) {
          this.setMuted(c.key, to);
          if (this.muteTabs) this.muteTabs.postMessage({ user: store.me, key: c.key, until: to });
        }
      } catch (e) {
        this.showError(e);
      }
      this.actionsSig = null; // drawn again: the state it shows, enabled
      store.changed();
    });
    return sel;
  }

  // renderPeople draws the header's actions for c and the contacts list,
  // each only when what it shows changed.
  renderPeople(c) {
    const base = !c ? '' : c.peer ? `d\u0000${this.people.sig(c.peer)}` : `g\u0000${c.group}`;
    const sig = c ? `${base}\u0000${this.store.mutedUntil(c)}` : base;
    if (sig !== this.actionsSig) {
      this.actionsSig = sig;
      const onError = (e) => this.showError(e);
      this.actionsEl.replaceChildren(...(!c ? [] : c.peer ? this.people.dmActions(c.peer, onError, () => this.clearError())
        : [h('button', { type: 'button', id: 'group-info', onclick: () => this.openGroupInfo(c.group) }, 'Group info')]),
      ...(c ? [this.muteControl(c)] : []));
    }
    const lsig = this.people.listSig();
    if (lsig !== this.contactsSig) {
      this.contactsSig = lsig;
      this.contactsEl.replaceChildren(...this.people.panelItems((uid) => {
        this.open(this.store.conv({ peer: uid }));
        this.follow();
      }, (e) => this.showError(e), () => this.clearError()));
    }
  }

  // savePending keeps the text messages not sent yet (sending, or not
  // sent) in the tab's sessionStorage, and restorePending takes them
  // back after a reload, to be sent again under their cids (the server
  // stores a cid once): a reload while the connection is down (to mend
  // it) lost them. Files are not kept (they would have to be read again).
  savePending() {
    const store = this.store;
    if (!store) return;
    const list = [];
    for (const c of store.convs.values()) {
      for (const p of c.pending.values()) {
        if (p.text && p.state !== 'sent') list.push({ cid: p.cid, peer: c.peer, group: c.group, body: p.body, replyTo: p.replyTo });
      }
    }
    const key = `edgechat-pending-${store.me}`;
    const json = list.length ? JSON.stringify(list) : '';
    if (json === this.savedPending) return; // each render asks: written only when it changed
    this.savedPending = json;
    try {
      if (json) sessionStorage.setItem(key, json);
      else sessionStorage.removeItem(key);
    } catch { /* storage full or off: kept in the page only */ }
  }

  restorePending() {
    const store = this.store;
    let list = [];
    try { list = JSON.parse(sessionStorage.getItem(`edgechat-pending-${store.me}`) || '[]'); } catch { list = []; }
    const out = [];
    for (const x of Array.isArray(list) ? list : []) {
      if (!x || typeof x.cid !== 'string' || typeof x.body !== 'string' || !(x.peer || x.group)) continue;
      const c = store.conv(x.group ? { group: x.group } : { peer: x.peer });
      if (c.pending.has(x.cid)) continue;
      store.addPending(c, x.cid, x.body, { text: true, replyTo: x.replyTo || undefined });
      out.push({ c, cid: x.cid, body: x.body, replyTo: x.replyTo || undefined });
    }
    return out;
  }

  // tooLongBody says (and shows) whether body is longer than a message's
  // body may be (the server refuses it: 0x99).
  tooLongBody(body) {
    const size = new TextEncoder().encode(body).length;
    if (size <= MAX_BODY) return false;
    this.showError(new Error(`The message is too long (${size.toLocaleString()} bytes, at most ${MAX_BODY.toLocaleString()}): shorten it or send it in parts.`));
    return true;
  }

  showError(e) {
    for (const el of [this.errorEl, this.convErrorEl]) if (el) el.textContent = e.message || String(e);
  }

  // clearError takes the error shown away as the user does something
  // else (open a chat, send, create a group): an error says what the
  // last try did, not what failed once in the page's life.
  clearError() {
    for (const el of [this.errorEl, this.convErrorEl]) if (el) el.textContent = '';
  }

  // lookUpSenders asks GET /user/{uid} once for each sender the page
  // shows in a group (the open one's messages, the list's last ones) to
  // learn the erased accounts, shown as "deleted user" (their messages
  // stay with the group; the profile answers the tombstone). One ask
  // each 200 ms at most: a busy group's senders would otherwise take
  // the user's whole read budget (20/s) from the reads that matter.
  lookUpSenders(store, c) {
    const add = (uid) => {
      if (uid === store.me || store.senders.has(uid)) return;
      store.senders.set(uid, 'asking');
      this.senderQueue.push({ store, uid });
    };
    if (!this.senderQueue) this.senderQueue = [];
    for (const x of store.list()) if (x.group && x.last) add(x.last.from);
    if (c && c.group) for (const m of c.messages.values()) add(m.from);
    if (this.senderQueue.length && !this.senderTimer) this.askSender();
  }

  askSender() {
    const next = this.senderQueue.shift();
    if (!next) { this.senderTimer = 0; return; }
    this.senderTimer = setTimeout(() => this.askSender(), 200);
    const { store, uid } = next;
    if (store !== this.store) return;
    this.api.user(uid).then((p) => {
      store.senders.set(uid, p && p.deleted ? 'deleted' : 'known');
      if (p && p.deleted) store.changed();
    }, (e) => {
      // Not found is not a deleted account; anything else (no answer,
      // a 5xx, a region cut off, 429) is asked again half a minute later.
      if (e instanceof ApiError && e.status === 404) store.senders.set(uid, 'known');
      else setTimeout(() => { if (store.senders.get(uid) === 'asking') store.senders.delete(uid); }, 30000);
    });
  }

  render() {
    const store = this.store;
    if (!store) return;
    this.savePending();
    if (!this.convsEl) {
      this.convsEl = h('ul', { class: 'convs', 'aria-label': 'Conversations' });
      this.listEl.replaceChildren(this.convsEl);
    }
    v.reconcile(this.convsEl, v.convItems(store, (c) => this.open(c)));
    const c = store.current && store.convs.get(store.current);
    this.lookUpSenders(store, c);
    const unread = store.list().reduce((n, x) => n + x.unread, 0);
    document.title = unread ? `(${unread}) edgechat` : 'edgechat';
    this.renderPeople(c);
    this.enableComposer(!!c);
    if (!c) {
      this.subEl.textContent = '';
      this.titleEl.textContent = 'No conversation open';
      v.reconcile(this.messagesEl, [{ key: 'empty', sig: '', make: () => h('li', { class: 'empty' }, 'Pick a conversation or start one.') }]);
      this.shownConv = null;
      return;
    }
    this.titleEl.textContent = v.convName(store, c);
    const typing = store.typing.get(c.key);
    if (typing && typing.until > Date.now()) this.subEl.textContent = `${typing.from} is typing…`;
    else this.subEl.textContent = c.peer ? v.presenceText(store.presence.get(c.peer)) : '';
    const el = this.messagesEl;
    // Another conversation: no node carries over, and it shows its
    // newest messages (not the place the one before was scrolled to).
    const fresh = this.shownConv !== c.key;
    const atBottom = fresh || el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (fresh) { el.keyed = null; this.shownConv = c.key; this.shownView = (this.shownView || 0) + 1; }
    v.reconcile(el, v.messageItems(store, c, this.media, (md) => this.view(md), (m) => this.setReply(m),
      (p) => { c.pending.delete(p.cid); store.changed(); }));
    if (atBottom) el.scrollTop = el.scrollHeight;
  }
}

// sameKey tells whether two keys (byte arrays) are the same bytes.
function sameKey(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function store_oldest(store, c) {
  const list = store.sorted(c);
  return list.length ? list[0].id : undefined;
}

new App(document.getElementById('app')).boot();

// listUnread is a conversation's unread count from the list the server
// answered, item, and what this page knows: the server counted up to its
// newest message then (none of it if this page had read that far, its
// read not yet committed when the list was made), and the messages from
// others that arrived here since count too (the list may answer after
// them).
function listUnread(store, c, item) {
  const newest = item.lastMessage && item.lastMessage.id;
  if (!newest) return item.unread;
  const read = c.readUpTo;
  let n = read && cmpID(read, newest) >= 0 ? 0 : item.unread;
  for (const [id, m] of c.messages) {
    if (cmpID(id, newest) > 0 && m.from !== store.me && !(read && cmpID(id, read) <= 0)) n++;
  }
  return n;
}
