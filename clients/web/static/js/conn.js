// The MQTT over WebSocket connection: one client per tab, subscribed to
// the user's own topics; it reconnects by itself (with a fresh access
// token) and says so through 'state' events, so the app can sync the gap.
// When the page's own node stays away (no load balancer in front), it
// asks the cluster's other nodes (named by the page) for /cluster/connect
// and moves the connection and the API calls to the node they name.
import mqtt from '../vendor/mqtt.esm.js';
import { browserDevice } from './api.js';

function randomId() {
  const b = new Uint8Array(6);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export class Connection extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.client = null;
    this.state = 'connecting';
    this.device = '';
    this.wsOverride = '';   // another node's WebSocket URL after a failover
    this.failures = 0;      // reconnect attempts since the last connection
    this.searching = false; // a failover search is running
    this.stopped = false;
    this.waiting = null;       // aborts the wait for the browser's device ID
    this.releaseDevice = null; // gives the browser's device ID up
    this.inflight = new Set(); // the chat publishes not answered yet (publishOn)
    const meta = document.querySelector('meta[name="edgechat-peers"]');
    this.peers = (meta ? meta.content : '').split(' ').filter((p) => /^https?:\/\/[^/]+$/.test(p));
  }

  // pickDevice names this tab's device: the browser's own ID (kept in
  // localStorage, the one its Web Push registration names, so that the
  // server does not push to a browser that has the app open) for one tab
  // of the user, held with a Web Lock while that tab's connection lives;
  // other tabs get IDs of their own (one client ID per connection) and
  // wait in line for the lock: when the tab holding it goes (closed,
  // reloaded, signed out), the next one reconnects under the browser's
  // ID, so that while any tab is open the browser's device is connected.
  async pickDevice() {
    const id = browserDevice();
    this.browserDevice = id;
    if (!navigator.locks) { this.device = `${id}-${randomId()}`; return; }
    const name = `edgechat-device-${this.api.userId}`;
    const hold = () => new Promise((release) => { this.releaseDevice = release; });
    const got = await new Promise((resolve) => {
      navigator.locks.request(name, { ifAvailable: true }, (lock) => {
        if (!lock || this.stopped) { resolve(false); return undefined; }
        resolve(true);
        return hold();
      }).catch(() => resolve(false));
    });
    if (got) { this.device = id; this.dispatchEvent(new Event('leader')); return; }
    this.device = `${id}-${randomId()}`;
    this.waiting = new AbortController();
    navigator.locks.request(name, { signal: this.waiting.signal }, () => {
      if (this.stopped) return undefined;
      this.waiting = null;
      this.device = id;
      this.dispatchEvent(new Event('leader'));
      if (this.client) this.connect(); // under the browser's ID now
      return hold();
    }).catch(() => {}); // aborted: the connection stopped
  }

  // leads says whether this tab speaks for the browser: the one tab of
  // the user holding the browser's device ID sends the presence
  // heartbeats and the "delivered" receipts (all the user's connections
  // share one publish rate: every tab sending its own spent it several
  // times over). The next tab in line for the ID takes over when it
  // goes. Without Web Locks every tab speaks for itself.
  leads() {
    return !navigator.locks || (!!this.browserDevice && this.device === this.browserDevice);
  }

  url() {
    return this.wsOverride || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/mqtt`;
  }

  // failover runs after a few failed reconnects: if the page's own
  // origin answers (its node, or a balancer in front of the cluster), the
  // connection stays with it; otherwise the first other node that answers
  // /cluster/connect names where to go (the least loaded healthy node).
  async failover() {
    if (this.searching) return;
    this.searching = true;
    try {
      const ask = async (origin) => {
        const ctl = new AbortController();
        const timer = setTimeout(() => ctl.abort(), 2000);
        try {
          const res = await fetch(`${origin}/cluster/connect`, {
            headers: { Authorization: `Bearer ${this.api.token}` }, credentials: 'omit', signal: ctl.signal,
          });
          return res.ok ? await res.json() : null;
        } catch {
          return null;
        } finally {
          clearTimeout(timer);
        }
      };
      if (await ask(location.origin)) {
        this.wsOverride = '';
        this.api.base = '';
        return;
      }
      const others = this.peers.filter((p) => p !== location.origin && p !== this.api.base);
      for (let i = others.length - 1; i > 0; i--) { // spread the pages over the nodes
        const j = Math.floor(Math.random() * (i + 1));
        [others[i], others[j]] = [others[j], others[i]];
      }
      for (const origin of others) {
        const node = await ask(origin);
        if (node && node.ws && /^wss?:\/\//.test(node.ws)) {
          this.wsOverride = node.ws;
          this.api.base = /^https?:\/\/[^/]+$/.test(node.http || '') ? node.http : origin;
          return;
        }
      }
    } finally {
      this.searching = false;
    }
  }

  async start() {
    if (!this.device) await this.pickDevice();
    if (!this.stopped) this.connect();
  }

  // connect opens the MQTT connection under this.device; a connection
  // open already (under another device ID) is closed once its messages
  // in flight are acknowledged, and nothing of it is heard after.
  connect() {
    const me = this.api.userId;
    const old = this.client;
    const client = mqtt.connect(this.url(), {
      protocolVersion: 5,
      clientId: `${me}/${this.device}`,
      username: me,
      password: this.api.token,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 1000,
      connectTimeout: 5000,
      resubscribe: false,
      transformWsUrl: () => this.url(), // each attempt goes where failover last pointed
      reconnectOnConnackError: true, // refused credentials: tried again with a fresh token (below)
    });
    this.client = client;
    if (old && old.connected) old.end(false);
    else if (old) {
      // One that is down is not waited for: end(false) waits until its
      // publishes in flight are acknowledged, which a connection that no
      // longer reconnects never is. They go on the new one, under their
      // cids (the server keeps one message per cid).
      old.end(true);
      for (const s of [...this.inflight]) if (s.client === old) this.publishOn(client, s);
    }
    const current = () => this.client === client;
    client.on('connect', () => {
      if (!current()) return;
      this.failures = 0;
      client.subscribe([`user/${me}/newMessage`, `user/${me}/typing`, `user/${me}/receipts`, `user/${me}/events`],
        { qos: 1 }, (err) => {
          if (!current()) return;
          if (err) { this.setState('error'); return; }
          // Subscribed first, then synced: nothing falls in between.
          this.setState('online');
        });
    });
    client.on('reconnect', () => {
      if (!current()) return;
      // The attempt (next, synchronously) presents the freshest token the
      // page holds: it refreshes it a minute before it expires, and the
      // one the connection began with may have expired since.
      if (this.api.token) client.options.password = this.api.token;
      this.setState('connecting');
      this.failures += 1;
      if (this.failures >= 2 && this.peers.length) this.failover();
      // Not on every attempt: each refresh rotates the session cookie the
      // browser's tabs share (see Api.refresh).
      if (this.api.expiresSoon()) this.renew();
    });
    client.on('error', (err) => {
      // The broker refused the access token (0x86: expired or revoked;
      // 0x87: none): the next attempt takes a fresh one, or the page
      // signs out if the session ended.
      if (current() && err && (err.code === 0x86 || err.code === 0x87)) this.renew();
    });
    client.on('offline', () => { if (current()) this.setState('offline'); });
    client.on('close', () => { if (current() && this.state === 'online') this.setState('offline'); });
    // Messages of the connection being replaced still count (the store
    // keeps each message once).
    client.on('message', (topic, payload) => this.receive(topic, payload));
  }

  // renew refreshes the access token for the connection's next attempt.
  renew() {
    this.api.refresh().then(() => { if (this.client) this.client.options.password = this.api.token; }).catch(() => {});
  }

  // stop closes the connection and gives the browser's device ID up
  // (another tab, or this one's next sign-in, takes it).
  stop() {
    this.stopped = true;
    if (this.client) this.client.end(true);
    this.client = null;
    if (this.waiting) this.waiting.abort();
    this.waiting = null;
    if (this.releaseDevice) this.releaseDevice();
    this.releaseDevice = null;
  }

  setState(s) {
    this.state = s;
    this.dispatchEvent(new CustomEvent('state', { detail: s }));
  }

  receive(topic, payload) {
    let v;
    try { v = JSON.parse(new TextDecoder().decode(payload)); } catch { return; }
    const parts = topic.split('/');
    if (parts[0] === 'presence' && parts.length === 2) {
      this.dispatchEvent(new CustomEvent('presence', { detail: { uid: parts[1], ...v } }));
      return;
    }
    if (parts[0] === 'group' && parts[2] === 'typing') v.group = parts[1];
    this.dispatchEvent(new CustomEvent(parts[parts.length - 1], { detail: v }));
  }

  // subscribe adds topics to the live connection (after a reconnect the
  // app subscribes again: the session is clean).
  // It resolves with the topics the server granted (presence is refused
  // until there is a conversation, for example).
  subscribe(topics) {
    if (!this.client || !this.client.connected || !topics.length) return Promise.resolve([]);
    return new Promise((resolve) => this.client.subscribe(topics, { qos: 1 }, (err, granted) => {
      if (err || !granted) { resolve([]); return; }
      resolve(granted.filter((g) => g.qos < 128).map((g) => g.topic));
    }));
  }

  unsubscribe(topics) {
    if (this.client && this.client.connected && topics.length) this.client.unsubscribe(topics);
  }

  // publish sends a QoS 0 notice (typing, receipts, heartbeats).
  publish(topic, value) {
    if (this.client && this.client.connected) this.client.publish(topic, value === undefined ? '' : JSON.stringify(value), { qos: 0 });
  }

  // sendText publishes a message at QoS 1; it resolves when the server
  // has committed it (the PUBACK), and rejects on a refusal.
  sendText(conv, cid, body, replyTo) {
    const env = { cid, type: 'text', body };
    if (replyTo) env.replyTo = replyTo;
    return this.sendEnvelope(conv, env);
  }

  sendMedia(conv, cid, mediaId, caption) {
    const env = { cid, type: 'media', media: { id: mediaId } };
    if (caption) env.body = caption;
    return this.sendEnvelope(conv, env);
  }

  sendEnvelope(conv, env) {
    const topic = conv.group ? `group/${conv.group}/newMessage` : `user/${conv.peer}/newMessage`;
    return new Promise((resolve, reject) => {
      if (!this.client) { reject(new Error('not connected')); return; }
      this.publishOn(this.client, { topic, payload: JSON.stringify(env), resolve, reject });
    });
  }

  // publishOn publishes the send s ({topic, payload, resolve, reject}) at
  // QoS 1 on client; it is in flight until answered there, or until it
  // moves to a newer connection (connect).
  publishOn(client, s) {
    s.client = client;
    this.inflight.add(s);
    client.publish(s.topic, s.payload, { qos: 1 }, (err, packet) => {
      if (s.client !== client) return; // moved on
      this.inflight.delete(s);
      if (err) s.reject(err);
      else if (packet && packet.reasonCode >= 0x80) {
        s.reject(Object.assign(new Error(`refused (0x${packet.reasonCode.toString(16)})`), { code: packet.reasonCode }));
      }
      else s.resolve();
    });
  }
}

export function newCid() {
  return `w-${Date.now().toString(36)}-${randomId()}`;
}
