// The app's state: conversations and their messages, deduplicated by ID
// (a message may come live, from sync and from history), with the sends
// still pending matched to their stored copies by cid.

// cmpID orders Snowflake IDs (decimal strings without leading zeros):
// the longer is the larger, then the digits decide.
export function cmpID(a, b) {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

export function convKey(c) {
  return c.group ? `g:${c.group}` : `d:${c.peer}`;
}

// serverName is the server's name of a conversation (user:{uid},
// group:{gid}: mutes, pushes); keyOfName turns one into a conv key.
export function serverName(c) {
  return c.group ? `group:${c.group}` : `user:${c.peer}`;
}

export function keyOfName(name) {
  if (name.startsWith('user:')) return `d:${name.slice(5)}`;
  if (name.startsWith('group:')) return `g:${name.slice(6)}`;
  return null;
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
    this.mutes = new Map(); // conv key → until (ms; Infinity: until unmuted)
    this.senders = new Map(); // uid → 'deleted' | 'known' | 'asking': group senders looked up
  }

  // senderName is how a message's sender shows: an erased account (its
  // profile the tombstone, deleted: true) as "deleted user".
  senderName(uid) {
    return this.senders.get(uid) === 'deleted' ? 'deleted user' : uid;
  }

  // mutedUntil is when c's mute ends (Infinity: when unmuted), or 0 when
  // it is not muted.
  mutedUntil(c) {
    const until = this.mutes.get(c.key) || 0;
    return until > Date.now() ? until : 0;
  }

  // stateOf is what became of a message I sent: sent (committed),
  // delivered (a device of the peer has it), read, or undeliverable (the
  // peer's region refused it for good).
  stateOf(c, m) {
    if (m.status === 'undeliverable') return 'undeliverable';
    if (c.group || m.from !== this.me) return 'sent';
    const r = this.receipts.get(c.peer);
    if (!r) return 'sent';
    if (r.read && cmpID(m.id, r.read) <= 0) return 'read';
    if (r.delivered && cmpID(m.id, r.delivered) <= 0) return 'delivered';
    return 'sent';
  }

  receipt(peer, type, upTo) {
    const r = this.receipts.get(peer) || {};
    if (!r[type] || cmpID(upTo, r[type]) > 0) r[type] = upTo;
    if (type === 'read' && (!r.delivered || cmpID(upTo, r.delivered) > 0)) r.delivered = upTo;
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
  // its conversation is open in a tab the user sees: in a hidden tab it
  // counts until the tab shows again). Returns false for a duplicate.
  add(m, live) {
    const c = this.convOf(m);
    if (c.messages.has(m.id)) return false;
    c.messages.set(m.id, m);
    c.order = null; // sorted again when asked
    if (m.from === this.me && m.cid) c.pending.delete(m.cid);
    if (!c.last || cmpID(m.id, c.last.id) > 0) c.last = m;
    if (live && m.from !== this.me && (this.current !== c.key || document.hidden)) c.unread++;
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
    if (!c.order) c.order = [...c.messages.values()].sort((a, b) => cmpID(a.id, b.id));
    return c.order;
  }

  // list is the conversations, most recent activity first; my groups
  // are listed before their first message too (after the others), so
  // that a member added to a quiet group finds it.
  list() {
    return [...this.convs.values()].filter((c) => c.last || c.pending.size || c.group || c.key === this.current)
      .sort((a, b) => {
        const x = a.last ? a.last.id : '0';
        const y = b.last ? b.last.id : '0';
        return cmpID(y, x);
      });
  }
}

// timeOf is the time a Snowflake ID was made (ms since 2024-01-01 UTC).
export function timeOf(id) {
  return new Date(Number(BigInt(id) >> 22n) + Date.UTC(2024, 0, 1));
}
