// The HTTP API: sign-in with the refresh token in an HttpOnly cookie (the
// page never sees it) and the access token in memory only; every call
// retries once after refreshing when the access token has expired.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// REFRESH_KEY names the localStorage entry holding the Idempotency-Key
// of the refresh under way (see Api.refresh).
const REFRESH_KEY = 'edgechat-refresh-key';

// browserDevice is this browser's device ID, kept in localStorage: its
// sign-ins name it (the session list shows it), one tab's MQTT
// client ID and its Web Push registration carry it.
export function browserDevice() {
  let id = localStorage.getItem('edgechat-device');
  if (!id) {
    const b = crypto.getRandomValues(new Uint8Array(6));
    id = `web-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
    localStorage.setItem('edgechat-device', id);
  }
  return id;
}

// dropPushSubscription unsubscribes the browser from its push service
// and closes the notifications the service worker showed (they hold the
// signed-out user's messages).
function dropPushSubscription() {
  if (!('serviceWorker' in navigator)) return;
  const reg = navigator.serviceWorker.getRegistration();
  reg.then((r) => r && r.getNotifications && r.getNotifications())
    .then((ns) => { for (const n of ns || []) n.close(); })
    .catch(() => {});
  reg.then((r) => r && r.pushManager && r.pushManager.getSubscription())
    .then((sub) => sub && sub.unsubscribe())
    .catch(() => {});
}

export class Api {
  constructor() {
    // base is '' (this page's node) or another node's origin after its
    // own went away (set by the connection). Sessions (the cookie) stay
    // with the page's node: sign-in calls always go there.
    this.base = '';
    this.token = null;
    this.expiresAt = 0;
    this.userId = null;
    this.refreshing = null;
    this.timer = 0;
    this.onSignedOut = () => {};
    // The browser's other tabs share the session cookie: a sign-out in
    // one (here or everywhere) signs the user out in all, at once (their
    // access tokens would otherwise keep them live for minutes).
    this.tabs = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel('edgechat-session');
    if (this.tabs) {
      this.tabs.onmessage = (ev) => {
        const d = ev.data;
        if (d && d.type === 'signedOut' && d.user && d.user === this.userId) this.signedOut();
        // Signed in (again) in another tab: a tab signed out resumes the
        // browser's session from the cookie.
        if (d && d.type === 'signedIn' && !this.token) this.onSignedInElsewhere();
      };
    }
    this.onSignedInElsewhere = () => {};
    // The session cookie turned out to be another user's at a refresh
    // (the token is that user's already): the page starts over as them.
    this.onUserChanged = () => {};
  }

  // tellTabs tells the browser's other tabs that user signed out
  // (type signedOut) or in (signedIn).
  tellTabs(user, type = 'signedOut') {
    if (this.tabs && user) this.tabs.postMessage({ type, user });
  }

  async send(method, path, body, { auth = true, own = false, key = '' } = {}) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (key) headers['Idempotency-Key'] = key;
    if (auth && this.token) headers.Authorization = `Bearer ${this.token}`;
    const base = own ? '' : this.base;
    const res = await fetch(base + path, {
      method, headers, credentials: base ? 'omit' : 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch { /* not JSON */ }
    if (!res.ok) {
      const e = (data && data.error) || {};
      throw new ApiError(res.status, e.code, e.message);
    }
    return data;
  }

  // call is send with the access token, refreshed once after a 401.
  // opts.key: the request's Idempotency-Key (see createGroup).
  async call(method, path, body, opts = {}) {
    try {
      return await this.send(method, path, body, opts);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      await this.refresh();
      return this.send(method, path, body, opts);
    }
  }

  session(t) {
    this.token = t.accessToken;
    this.userId = t.userId;
    this.expiresAt = Date.now() + (t.expiresIn || 900) * 1000;
    clearTimeout(this.timer);
    const ms = Math.max(10, (t.expiresIn || 900) - 60) * 1000;
    this.timer = setTimeout(() => this.refresh().catch(() => {}), ms);
  }

  // expiresSoon says whether the access token has less than a minute left
  // (a timer that should have refreshed it may have been held up: a
  // sleeping laptop, a throttled background tab).
  expiresSoon() {
    return !this.token || Date.now() > this.expiresAt - 60000;
  }

  // login signs in. Each sign-in goes under an Idempotency-Key: one the
  // server did not answer (the network lost its answer, or a 5xx) is
  // sent again under the same key when the user asks again with the same
  // name and password, so that the server answers the session the first
  // attempt made instead of making a second. An answer (signed in, or
  // refused) ends the attempt: the next is another, under a new key.
  async login(username, password) {
    if (!this.signIn || this.signIn.username !== username || this.signIn.password !== password) {
      const b = crypto.getRandomValues(new Uint8Array(12));
      this.signIn = { username, password, key: `l-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}` };
    }
    let t;
    try {
      t = await this.send('POST', '/auth/login', { username, password, session: 'cookie', device: browserDevice() },
        { auth: false, own: true, key: this.signIn.key });
    } catch (e) {
      if (e instanceof ApiError && e.status < 500) this.signIn = null;
      throw e;
    }
    this.signIn = null;
    this.session(t);
  }

  // register signs up and in. A sign-up asked for again after a failure
  // (its answer may have been lost after the server made the account)
  // goes under the key of the first attempt, so that the server answers
  // that account instead of "username is taken"; another name or
  // password is another sign-up, under a new key.
  async register(username, password) {
    if (!this.signUp || this.signUp.username !== username || this.signUp.password !== password) {
      const b = crypto.getRandomValues(new Uint8Array(12));
      this.signUp = { username, password, key: `r-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}` };
    }
    await this.send('POST', '/auth/register', { username, password }, { auth: false, own: true, key: this.signUp.key });
    this.signUp = null;
    await this.login(username, password);
  }

  // resume signs in with the session cookie, if there is one. A refresh
  // the server could not answer for now (the network, 502, 503 while the
  // cluster elects its leader, 504, 429: the cookie is kept for the
  // retry) is tried again, backing off 0.5 to 10 s, with onWait told of
  // each failure: the session may well be alive, and the sign-in form
  // would say it is not.
  async resume(onWait = () => {}) {
    for (let delay = 500; ; delay = Math.min(2 * delay, 10000)) {
      try {
        await this.refresh();
        return true;
      } catch (e) {
        const transient = !(e instanceof ApiError) || [429, 502, 503, 504].includes(e.status);
        if (!transient) return false;
        onWait(e);
      }
      await new Promise((done) => setTimeout(done, delay));
    }
  }

  // refresh gets a new access token with the session cookie, which it
  // rotates. The browser's tabs share the cookie: two refreshes at once
  // would send the same refresh token twice, which the server takes for
  // a stolen token and ends the session. So a tab refreshes holding a
  // Web Lock; a tab that waited sends the cookie the other one's answer
  // set, and gets a token of its own.
  //
  // Each refresh of one cookie goes under one Idempotency-Key, kept in
  // localStorage (the tabs share the cookie) until an answer comes: a
  // refresh whose answer was lost (the server rotated the cookie, the
  // network dropped the answer and its Set-Cookie) is sent again with
  // the old cookie and that key, and the server answers it as a retry
  // instead of ending the session as a reuse.
  refresh() {
    if (!this.refreshing) {
      const post = () => {
        let key = localStorage.getItem(REFRESH_KEY);
        if (!key) {
          const b = crypto.getRandomValues(new Uint8Array(12));
          key = `rk-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
          localStorage.setItem(REFRESH_KEY, key);
        }
        return this.send('POST', '/auth/refresh', {}, { auth: false, own: true, key }).then((t) => {
          localStorage.removeItem(REFRESH_KEY);
          return t;
        }, (e) => {
          // An answer came (a refusal): the next refresh is another one.
          if (e instanceof ApiError && e.status < 500 && e.status !== 429) localStorage.removeItem(REFRESH_KEY);
          throw e;
        });
      };
      this.refreshing = (navigator.locks ? navigator.locks.request('edgechat-refresh', post) : post())
        .then((t) => {
          const was = this.userId;
          this.session(t);
          if (was && t.userId !== was) {
            // The browser's cookie is another user's now (signed in in
            // another tab after this one's session there ended): this
            // page's user is signed out here, and the call that asked
            // for the refresh is not answered with the other's data.
            dropPushSubscription();
            this.tellTabs(was);
            this.onUserChanged(was);
            throw new ApiError(401, 'user_changed', `Signed in as ${t.userId} in another tab.`);
          }
        })
        .catch((e) => {
          if (e instanceof ApiError && e.code === 'user_changed') throw e;
          if (e instanceof ApiError && e.status === 401) this.signedOut();
          throw e;
        })
        .finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  // logout ends this browser's session and, naming the browser's device,
  // its Web Push registration: the next person at this browser must not
  // get the signed-out user's messages. Only the server ends the session
  // (the cookie is HttpOnly): when it could not be reached (or failed),
  // the page stays signed in and says so, rather than show a sign-in
  // screen over a session a reload resumes. A refusal (4xx) means there
  // was no session left to end.
  async logout() {
    const user = this.userId;
    try {
      await this.send('POST', '/auth/logout', { device: browserDevice() }, { auth: false, own: true });
    } catch (e) {
      if (!(e instanceof ApiError) || e.status >= 500 || e.status === 429) {
        throw new Error('Could not sign out: the server did not answer. You are still signed in; try again.');
      }
    }
    this.signedOut();
    this.tellTabs(user);
  }

  // logoutAll ends every session of the user (every browser and device):
  // their refresh tokens are revoked, this browser's cookie cleared. This
  // browser's push registration goes first (no token of the user works
  // after). A failure leaves this session signed in (the others may be,
  // too).
  async logoutAll() {
    await this.call('DELETE', `/user/me/devices/${encodeURIComponent(browserDevice())}`).catch(() => {});
    const user = this.userId;
    await this.call('POST', '/auth/logout-all', {});
    this.signedOut();
    this.tellTabs(user);
  }

  // sessions lists the user's sign-ins (devices and browsers);
  // endSession signs one of them out at once.
  sessions() { return this.call('GET', '/auth/sessions'); }
  endSession(id) { return this.call('DELETE', `/auth/sessions/${encodeURIComponent(id)}`); }

  // identities answers {identities, password} (whether the account has a
  // password), or null on a server without identity providers.
  async identities() {
    try {
      return await this.call('GET', '/user/me/identities');
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  }

  // changePassword changes the user's password; the server signs every
  // other session out in the same commit and answers this one's new
  // tokens (the refresh token into the cookie). {revoked} is how many
  // sessions ended, this one's old one included.
  async changePassword(currentPassword, newPassword) {
    const body = { currentPassword, newPassword, session: 'cookie' };
    let t;
    try {
      t = await this.send('POST', '/auth/password', body, { own: true });
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      await this.refresh();
      t = await this.send('POST', '/auth/password', body, { own: true });
    }
    this.session(t);
    return t;
  }

  // signedOut forgets the session (signed out here, everywhere, or
  // ended from elsewhere) and unsubscribes the browser from its push
  // service: a registration the server still holds (the session ended
  // where the page could not remove it) then pushes into the void, not
  // to whoever uses this browser next.
  signedOut() {
    clearTimeout(this.timer);
    const was = this.token;
    this.token = null;
    this.userId = null;
    dropPushSubscription();
    if (was) this.onSignedOut();
  }

  // conversations lists all my conversations, paging GET
  // /chat/conversations (1,000 a page) while it has more (a server that
  // answers no nextCursor has one page only; so has one whose later page
  // reached a node older than the cursor, which refuses it with a 400, as
  // during a rolling upgrade).
  async conversations() {
    const conversations = [];
    let cursor = '';
    for (;;) {
      const q = new URLSearchParams({ limit: '1000' });
      if (cursor) q.set('cursor', cursor);
      let res;
      try {
        res = await this.call('GET', `/chat/conversations?${q}`);
      } catch (e) {
        if (cursor && e instanceof ApiError && e.status === 400) return { conversations };
        throw e;
      }
      conversations.push(...(res.conversations || []));
      if (!res.hasMore || !res.nextCursor || res.nextCursor === cursor) return { conversations };
      cursor = res.nextCursor;
    }
  }
  history(conv, before) {
    const q = new URLSearchParams(conv.group ? { group: conv.group } : { with: conv.peer });
    if (before) q.set('before', before);
    q.set('limit', '50');
    return this.call('GET', `/chat/history?${q}`);
  }
  sync(since) {
    const q = new URLSearchParams({ limit: '1000' });
    if (since) q.set('since', since);
    return this.call('GET', `/chat/sync?${q}`);
  }
  // syncEnd is where the sync stream ends now, or null from a server
  // older than that call (404): then only paging finds it.
  async syncEnd() {
    try {
      return (await this.call('GET', '/chat/sync/end')).cursor || null;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  }
  user(uid) { return this.call('GET', `/user/${encodeURIComponent(uid)}`); }
  // search finds people in this region and every linked one (theirs
  // come qualified, name@region, after this region's).
  search(q) { return this.call('GET', `/user/search?${new URLSearchParams({ q, limit: '8', regions: 'all' })}`); }
  // providers lists the identity providers users may sign in with (none
  // when the server has none configured).
  async providers() {
    try {
      const res = await this.send('GET', '/auth/oidc/providers', undefined, { auth: false });
      return (res.providers || []).filter((p) => p.codeFlow);
    } catch {
      return [];
    }
  }
  vapidKey() { return this.send('GET', '/push/vapid', undefined, { auth: false }); }
  registerDevice(device, subscription) {
    return this.call('POST', '/user/me/devices', { device, platform: 'webpush', subscription });
  }
  // groups lists all my groups, paging GET /user/groups (200 a page).
  async groups() {
    const groups = [];
    let cursor = '';
    for (;;) {
      const q = new URLSearchParams({ limit: '200' });
      if (cursor) q.set('cursor', cursor);
      const res = await this.call('GET', `/user/groups?${q}`);
      groups.push(...(res.groups || []));
      if (!res.nextCursor || res.nextCursor === cursor) return { groups };
      cursor = res.nextCursor;
    }
  }
  // createGroup sends key as the Idempotency-Key: the same request sent
  // again with it (its answer was lost) answers the group it made.
  createGroup(name, members, key) { return this.call('POST', '/user/groups', { name, members }, { key }); }
  // mutes lists the conversations muted now ({mutes: [{conversation,
  // until?}]}); mute mutes one (named user:{uid} or group:{gid}) until
  // until (an ISO time) or, without, until unmuted.
  mutes() { return this.call('GET', '/user/me/mutes'); }
  mute(conversation, until) {
    return this.call('PUT', `/user/me/mutes/${encodeURIComponent(conversation)}`, until ? { until } : {});
  }
  unmute(conversation) { return this.call('DELETE', `/user/me/mutes/${encodeURIComponent(conversation)}`); }
  read(conv, upTo) {
    return this.call('POST', '/chat/read', conv.group ? { group: conv.group, upTo } : { with: conv.peer, upTo });
  }
}
