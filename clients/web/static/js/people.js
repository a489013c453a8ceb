// People: my contacts and blocks (one-way lists of mine on the server),
// the actions of a direct conversation's header, and a group's info
// panel (members and roles). Names are text, never HTML.
import { h } from './views.js';

// all reads every page of a paged list (`key` holds the items).
async function all(api, path, key) {
  const out = [];
  let cursor = '';
  do {
    const q = new URLSearchParams({ limit: '200' });
    if (cursor) q.set('cursor', cursor);
    const res = await api.call('GET', `${path}?${q}`);
    out.push(...(res[key] || []));
    cursor = res.nextCursor || '';
  } while (cursor);
  return out;
}

export class People extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.contacts = new Map(); // uid → profile
    this.blocks = new Map(); // uid → profile
  }

  changed() { this.dispatchEvent(new Event('change')); }

  async load() {
    const [contacts, blocks] = await Promise.all([
      all(this.api, '/user/me/contacts', 'contacts'), all(this.api, '/user/me/blocks', 'blocks')]);
    this.contacts = new Map(contacts.map((p) => [p.userId, p]));
    this.blocks = new Map(blocks.map((p) => [p.userId, p]));
    this.changed();
  }

  async setContact(uid, on) {
    if (on) this.contacts.set(uid, await this.api.call('POST', '/user/me/contacts', { uid }));
    else {
      await this.api.call('DELETE', `/user/me/contacts/${encodeURIComponent(uid)}`);
      this.contacts.delete(uid);
    }
    this.changed();
  }

  async setBlock(uid, on) {
    if (on) this.blocks.set(uid, await this.api.call('POST', '/user/me/blocks', { uid }));
    else {
      await this.api.call('DELETE', `/user/me/blocks/${encodeURIComponent(uid)}`);
      this.blocks.delete(uid);
    }
    this.changed();
  }

  // sig says when dmActions or panel would draw something else.
  sig(peer) {
    return `${peer}\u0000${this.contacts.has(peer)}\u0000${this.blocks.has(peer)}`;
  }

  // dmActions are the header buttons of a direct conversation with peer.
  dmActions(peer, onError, onStart = () => {}) {
    const isContact = this.contacts.has(peer);
    const blocked = this.blocks.has(peer);
    // Disabled while under way; a failure enables it again (the button is
    // drawn anew only when the contact or block changes).
    const act = (fn) => (ev) => {
      const btn = ev.currentTarget;
      btn.disabled = true;
      onStart();
      fn().catch((e) => { btn.disabled = false; onError(e); });
    };
    return [
      h('button', { type: 'button', id: 'contact-toggle', 'aria-pressed': String(isContact),
        onclick: act(() => this.setContact(peer, !isContact)) },
      isContact ? 'Remove contact' : 'Add contact'),
      h('button', { type: 'button', id: 'block-toggle', 'aria-pressed': String(blocked),
        onclick: act(() => this.setBlock(peer, !blocked)) },
      blocked ? 'Unblock' : 'Block'),
    ];
  }

  listSig() {
    return [...this.contacts.keys()].join(',') + '\u0000' + [...this.blocks.keys()].join(',');
  }

  // panelItems are the sidebar's contacts list and blocked users.
  panelItems(onOpen, onError, onStart = () => {}) {
    const name = (p) => (p.displayName && p.displayName !== p.userId ? `${p.displayName} (${p.userId})` : p.userId);
    const contacts = [...this.contacts.values()].map((p) => h('li', {},
      h('button', { type: 'button', 'data-contact': p.userId, 'aria-label': `Chat with ${name(p)}`, onclick: () => onOpen(p.userId) }, name(p))));
    const blocks = [...this.blocks.values()].map((p) => h('li', {}, h('span', {}, name(p)),
      h('button', { type: 'button', 'data-unblock': p.userId, 'aria-label': `Unblock ${p.userId}`,
        onclick: () => { onStart(); this.setBlock(p.userId, false).catch(onError); } }, 'Unblock')));
    return [
      h('ul', { class: 'contacts', 'aria-label': 'Contacts' },
        contacts.length ? contacts : h('li', { class: 'none' }, 'No contacts yet')),
      blocks.length ? h('p', { class: 'blocked-title' }, 'Blocked') : null,
      blocks.length ? h('ul', { class: 'blocked', 'aria-label': 'Blocked users' }, blocks) : null,
    ].filter(Boolean); // replaceChildren writes a null as the text "null"
  }
}

// Group roles, highest first.
const rank = { owner: 3, admin: 2, member: 1 };

// GroupPanel is a group's info dialog: its members with their roles, and
// what my role lets me do (add, remove, make admin or member, transfer
// ownership, leave). The server checks every rule again; a refusal is
// shown in the panel.
export class GroupPanel {
  constructor(api, gid, me, { onLeft, search }) {
    this.api = api;
    this.gid = gid;
    this.me = me;
    this.onLeft = onLeft;
    this.search = search;
    this.list = h('ul', { class: 'members', 'aria-label': 'Members' });
    this.title = h('h2', { id: 'group-panel-title' }, 'Group');
    this.error = h('p', { class: 'error', role: 'alert' });
    const people = h('datalist', { id: 'group-people' });
    const add = h('input', { id: 'add-member', 'aria-label': 'Add a member (username)', placeholder: 'username',
      autocapitalize: 'none', autocomplete: 'off', list: 'group-people' });
    let timer = 0;
    add.addEventListener('input', () => {
      clearTimeout(timer);
      const q = add.value.trim();
      if (!q) return;
      timer = setTimeout(() => this.search(q).then((users) => {
        people.replaceChildren(...users.map((u) => h('option', { value: u.userId })));
      }).catch(() => {}), 250);
    });
    this.addForm = h('form', { class: 'add-member', onsubmit: (ev) => {
      ev.preventDefault();
      const uid = add.value.trim().toLowerCase();
      if (uid) this.act(() => this.api.call('POST', this.path('/members'), { uid })).then(() => { add.value = ''; });
    } }, add, people, h('button', { type: 'submit', id: 'add-member-submit' }, 'Add'));
    this.el = h('dialog', { class: 'groupinfo', 'aria-labelledby': 'group-panel-title' },
      this.title, this.list, this.addForm, this.error,
      h('div', { class: 'actions' },
        h('button', { type: 'button', id: 'leave-group', onclick: () => this.leave() }, 'Leave group'),
        h('button', { type: 'button', class: 'close', onclick: () => this.close() }, 'Close')));
    this.el.addEventListener('close', () => this.el.remove());
  }

  path(rest = '') { return `/user/groups/${encodeURIComponent(this.gid)}${rest}`; }

  async open() {
    document.body.append(this.el);
    this.el.showModal();
    await this.refresh();
  }

  close() { if (this.el.open) this.el.close(); }

  get isOpen() { return this.el.isConnected && this.el.open; }

  // act runs one change, then shows the group as it is now.
  async act(fn) {
    this.error.textContent = '';
    try {
      await fn();
    } catch (e) {
      this.error.textContent = e.message || String(e);
    }
    await this.refresh();
  }

  async refresh() {
    let g;
    try {
      g = await this.api.call('GET', this.path());
    } catch (e) {
      if (e.status === 404) { this.close(); return; } // not a member any more
      this.error.textContent = e.message || String(e);
      return;
    }
    let members = g.members;
    if (!members) members = await all(this.api, this.path('/members'), 'members');
    this.title.textContent = `${g.name} · ${g.memberCount} members`;
    const mine = rank[g.role] || 0;
    this.addForm.hidden = mine < rank.admin;
    const items = members.map((m) => {
      const r = rank[m.role] || 0;
      const self = m.userId === this.me;
      const btn = (cls, text, label, fn) => h('button', { type: 'button', class: cls, 'aria-label': `${label} ${m.userId}`, onclick: () => this.act(fn) }, text);
      return h('li', { 'data-member': m.userId, 'data-role': m.role },
        h('span', { class: 'name' }, m.userId), ' ', h('span', { class: 'role' }, m.role),
        !self && g.role === 'owner' && m.role === 'member'
          ? btn('make-admin', 'Make admin', 'Make admin:', () => this.api.call('POST', this.path('/members'), { uid: m.userId, role: 'admin' })) : null,
        !self && g.role === 'owner' && m.role === 'admin'
          ? btn('make-member', 'Make member', 'Make member:', () => this.api.call('POST', this.path('/members'), { uid: m.userId, role: 'member' })) : null,
        !self && mine >= rank.admin && mine > r
          ? btn('remove', 'Remove', 'Remove', () => this.api.call('DELETE', this.path(`/members/${encodeURIComponent(m.userId)}`))) : null,
        !self && g.role === 'owner'
          ? btn('transfer', 'Make owner', 'Transfer ownership to', () => this.api.call('POST', this.path('/owner'), { uid: m.userId })) : null);
    });
    this.list.replaceChildren(...items);
  }

  async leave() {
    this.error.textContent = '';
    try {
      await this.api.call('DELETE', this.path(`/members/${encodeURIComponent(this.me)}`));
    } catch (e) {
      this.error.textContent = e.code === 'owner_must_transfer'
        ? 'You own this group: make another member the owner first.' : (e.message || String(e));
      return;
    }
    this.close();
    this.onLeft(this.gid);
  }
}
