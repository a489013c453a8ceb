// The app's state: conversations and their messages, deduplicated by ID
// (a message may come live, from sync and from history), with the sends
// still pending matched to their stored copies by cid.

export function convKey(c) {
  return c.group ? `g:${c.group}` : `d:${c.peer}`;
}

export class Store extends EventTarget {
  constructor(me) {
    super();
    this.me = me;
    this.convs = new Map();
    this.current = null;
    this.groups = new Map(); // gid → {name}
    this.presence = new Map(); // uid → {status, lastSeen}
    this.typing = new Map(); // conv key → {from, until}
    this.receipts = new Map(); // peer → {delivered, read}: the highest IDs of mine they acknowledged
  }

  // stateOf is what became of a message I sent: sent (committed),
  // delivered (a device of the peer has it) or read.
  stateOf(c, m) {
    if (c.group || m.from !== this.me) return 'sent';
    const r = this.receipts.get(c.peer);
    if (!r) return 'sent';
    const id = BigInt(m.id);
    if (r.read && id <= BigInt(r.read)) return 'read';
    if (r.delivered && id <= BigInt(r.delivered)) return 'delivered';
    return 'sent';
  }

  receipt(peer, type, upTo) {
    const r = this.receipts.get(peer) || {};
    if (!r[type] || BigInt(upTo) > BigInt(r[type])) r[type] = upTo;
    if (type === 'read' && (!r.delivered || BigInt(upTo) > BigInt(r.delivered))) r.delivered = upTo;
    this.receipts.set(peer, r);
  }

  changed() {
    this.dispatchEvent(new Event('change'));
  }

  conv(ref) {
    const key = convKey(ref);
    let c = this.convs.get(key);
    if (!c) {
      c = { key, peer: ref.peer || null, group: ref.group || null, messages: new Map(),
            pending: new Map(), last: null, unread: 0, hasMore: true, loaded: false };
      this.convs.set(key, c);
    }
    return c;
  }

  convOf(m) {
    if (m.group) return this.conv({ group: m.group });
    return this.conv({ peer: m.from === this.me ? m.to : m.from });
  }

  // add stores m; live says it arrived now (it counts as unread unless
  // its conversation is open). Returns false for a duplicate.
  add(m, live) {
    const c = this.convOf(m);
    if (c.messages.has(m.id)) return false;
    c.messages.set(m.id, m);
    if (m.from === this.me && m.cid) c.pending.delete(m.cid);
    if (!c.last || BigInt(m.id) > BigInt(c.last.id)) c.last = m;
    if (live && m.from !== this.me && this.current !== c.key) c.unread++;
    return true;
  }

  addPending(c, cid, body, extra = {}) {
    c.pending.set(cid, { cid, body, from: this.me, state: 'pending', at: Date.now(), ...extra });
  }

  setPending(c, cid, state, extra = {}) {
    const p = c.pending.get(cid);
    if (p) Object.assign(p, { state }, extra);
  }

  // sorted lists the conversation's messages oldest first.
  sorted(c) {
    return [...c.messages.values()].sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
  }

  // list is the conversations, most recent activity first.
  list() {
    return [...this.convs.values()].filter((c) => c.last || c.pending.size || c.key === this.current)
      .sort((a, b) => {
        const x = a.last ? BigInt(a.last.id) : 0n;
        const y = b.last ? BigInt(b.last.id) : 0n;
        return x === y ? 0 : x > y ? -1 : 1;
      });
  }
}

// timeOf is the time a Snowflake ID was made (ms since 2024-01-01 UTC).
export function timeOf(id) {
  return new Date(Number(BigInt(id) >> 22n) + Date.UTC(2024, 0, 1));
}
