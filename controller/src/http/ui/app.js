// The ferrofab dashboard: plain JavaScript against the HTTP/JSON API
// (/v1), live from its server-sent-event watches. No build step.
'use strict';

const KINDS_WATCHED = ['nodes', 'volumes', 'attachments'];
const KINDS_LISTED = ['pools', 'tenants'];
const S = {
  token: null, admin: false, page: 'overview', version: '', events: false, eventItems: [],
  data: { nodes: new Map(), pools: new Map(), volumes: new Map(), attachments: new Map(), tenants: new Map() },
  sort: { key: 'name', dir: 1 }, abort: null, pending: 0, refetch: null,
};
const $ = (id) => document.getElementById(id);

function esc(v) {
  return String(v == null ? '' : v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
function word(v, prefix) { return (v || '').startsWith(prefix) ? v.slice(prefix.length) : (v || ''); }
function name(o) { return (o.metadata && o.metadata.name) || ''; }
function bytes(n) {
  n = Number(n || 0);
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + u[i];
}
// Readiness as `ferrofab status` reads it: a volume's or an attachment's
// phase first, else the Ready condition.
function ready(o) {
  const st = o.status || {};
  const cond = (st.conditions || []).find((x) => x.type === 'Ready');
  const why = cond ? (cond.message || '') : '';
  if (st.phase && st.phase.startsWith('VOLUME_PHASE_')) {
    const p = word(st.phase, 'VOLUME_PHASE_');
    return { ok: p === 'READY', text: p === 'FAILED' ? ((cond && cond.reason) || 'Failed') : p, why };
  }
  if (st.phase && st.phase.startsWith('ATTACHMENT_PHASE_')) {
    const p = word(st.phase, 'ATTACHMENT_PHASE_');
    return { ok: p === 'ATTACHED', text: p, why };
  }
  const c = cond;
  if (!c) return { ok: false, text: 'no report yet', why: '' };
  const ok = c.status === 'CONDITION_STATUS_TRUE';
  return { ok, text: ok ? 'Ready' : (c.reason || 'NotReady'), why: c.message || '' };
}
function duration(text) {
  const m = /^(\d+)\s*([smhd])$/.exec((text || '').trim());
  if (!m) return null;
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2]];
}
function countdown(iso) {
  if (!iso) return '';
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const a = Math.abs(s);
  const t = a >= 172800 ? Math.round(a / 86400) + 'd' : a >= 7200 ? Math.round(a / 3600) + 'h'
    : a >= 120 ? Math.round(a / 60) + 'm' : a + 's';
  return s >= 0 ? 'in ' + t : 'expired ' + t + ' ago';
}
function toast(msg, bad) {
  const t = $('toast');
  t.textContent = msg;
  t.className = bad ? 'toast bad' : 'toast';
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ''; }, 6000);
}

// ---------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || ('HTTP ' + status));
    this.status = status;
    this.code = e.code || '';
  }
}
async function api(method, path, body) {
  const opts = { method, headers: { Authorization: 'Bearer ' + S.token } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}
async function listAll(kind) {
  const items = [];
  let cont = '';
  do {
    const page = await api('GET', '/v1/' + kind + '?limit=500' + (cont ? '&continue=' + encodeURIComponent(cont) : ''));
    items.push(...page.items);
    cont = page.continue;
  } while (cont);
  return items;
}
async function refetchListed() {
  for (const kind of KINDS_LISTED) {
    if (kind === 'pools' && !S.admin) continue;
    try {
      const items = await listAll(kind);
      S.data[kind] = new Map(items.map((o) => [name(o), o]));
    } catch (e) {
      if (e.status === 401) return signOut('Your token is no longer valid: ' + e.message);
    }
  }
  render();
}
function scheduleRefetch() {
  clearTimeout(S.refetch);
  S.refetch = setTimeout(refetchListed, 300);
}

// A watch over fetch (EventSource cannot send the token): reads the
// server-sent events, resumes after a drop from the last event id.
async function watch(kind, signal) {
  let last = '';
  for (;;) {
    try {
      const headers = { Authorization: 'Bearer ' + S.token };
      if (last) headers['Last-Event-ID'] = last;
      const r = await fetch('/v1/' + kind + '?watch=true', { headers, signal });
      if (r.status === 401) return signOut('Your token is no longer valid');
      if (!r.ok || !r.body) throw new Error('watch ' + kind + ': HTTP ' + r.status);
      setLive(true);
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = { event: '', id: '', data: '' };
          for (const line of block.split('\n')) {
            const k = line.indexOf(':');
            if (k <= 0) continue;
            const f = line.slice(0, k);
            const v = line.slice(k + 1).replace(/^ /, '');
            if (f === 'event') ev.event = v; else if (f === 'id') ev.id = v; else if (f === 'data') ev.data += v;
          }
          if (ev.id) last = ev.id;
          if (ev.event) apply(kind, ev);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    setLive(false);
    await new Promise((res) => setTimeout(res, 2000));
    if (signal.aborted) return;
  }
}
function apply(kind, ev) {
  if (ev.event === 'ERROR' || ev.event === 'SYNCED') { render(); return; }
  let d;
  try { d = JSON.parse(ev.data); } catch (_) { return; }
  if (!d.object) return;
  if (ev.event === 'DELETED') S.data[kind].delete(name(d.object));
  else S.data[kind].set(name(d.object), d.object);
  if (kind === 'volumes') scheduleRefetch();
  render();
}
function setLive(on) { $('live').textContent = on ? '● live' : '○ reconnecting'; }

// ---------------------------------------------------------------- session
async function signIn(token) {
  S.token = token;
  const me = await api('GET', '/v1/whoami');
  S.admin = me.identity === 'admin';
  S.events = !!(me.features && me.features.events);
  try { S.version = (await (await fetch('/v1/openapi.json')).json()).info.version; } catch (_) { S.version = ''; }
  sessionStorage.setItem('ferrofab-token', token);
  $('signin').hidden = true;
  $('nav').hidden = false;
  $('signout').hidden = false;
  $('who').textContent = 'signed in as ' + me.identity;
  for (const b of document.querySelectorAll('#nav button')) {
    if (b.dataset.page === 'pools') b.hidden = !S.admin;
    if (b.dataset.page === 'events') b.hidden = !S.events;
  }
  S.abort = new AbortController();
  for (const k of KINDS_WATCHED) watch(k, S.abort.signal);
  await refetchListed();
  if (S.events) pollEvents(S.abort.signal);
  show(S.page);
}
function signOut(msg) {
  if (S.abort) S.abort.abort();
  S.token = null;
  sessionStorage.removeItem('ferrofab-token');
  for (const k of Object.keys(S.data)) S.data[k] = new Map();
  $('signin').hidden = false;
  $('nav').hidden = true;
  $('signout').hidden = true;
  $('who').textContent = '';
  $('live').textContent = '';
  for (const p of document.querySelectorAll('.page')) p.hidden = true;
  $('signin-error').textContent = msg || '';
}
function show(page) {
  S.page = page;
  for (const b of document.querySelectorAll('#nav button')) {
    if (b.dataset.page === page) b.setAttribute('aria-current', 'page'); else b.removeAttribute('aria-current');
  }
  for (const p of document.querySelectorAll('.page')) p.hidden = p.id !== 'page-' + page;
  render();
}

// ---------------------------------------------------------------- rendering
let frame = 0;
function render() {
  if (frame || !S.token) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const r = { overview: renderOverview, nodes: renderNodes, pools: renderPools, volumes: renderVolumes, tenants: renderTenants, events: renderEvents }[S.page];
    if (r) r();
  });
}
function table(head, rows, sortable) {
  const th = head.map((h) => {
    if (!sortable || !h.key) return '<th scope="col" class="' + (h.cls || '') + '">' + esc(h.label) + '</th>';
    const arrow = S.sort.key === h.key ? (S.sort.dir > 0 ? ' ▲' : ' ▼') : '';
    const sort = S.sort.key === h.key ? (S.sort.dir > 0 ? 'ascending' : 'descending') : 'none';
    return '<th scope="col" aria-sort="' + sort + '" class="' + (h.cls || '') + '"><button type="button" data-sort="' + h.key + '">' + esc(h.label) + arrow + '</button></th>';
  }).join('');
  const body = rows.length ? rows.join('') : '<tr><td colspan="' + head.length + '">none</td></tr>';
  return '<div class="table-wrap"><table><thead><tr>' + th + '</tr></thead><tbody>' + body + '</tbody></table></div>';
}
function bar(used, total) {
  const pct = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  return '<div class="bar' + (pct >= 90 ? ' full' : '') + '" role="meter" aria-valuemin="0" aria-valuemax="100" aria-valuenow="' + pct + '" aria-label="' + pct + '% used"><span style="width:' + pct + '%"></span></div>';
}
function keepFocus(container, html) {
  const a = document.activeElement;
  const key = a && container.contains(a) ? (a.dataset.act ? a.dataset.act + '|' + a.dataset.name : a.dataset.sort ? 'sort|' + a.dataset.sort : null) : null;
  container.innerHTML = html;
  if (key) {
    const [k, v] = key.split('|');
    const el = k === 'sort' ? container.querySelector('[data-sort="' + v + '"]') : container.querySelector('[data-act="' + k + '"][data-name="' + v + '"]');
    if (el) el.focus();
  }
}

function renderOverview() {
  const d = S.data;
  const nodes = [...d.nodes.values()];
  const vols = [...d.volumes.values()];
  const atts = [...d.attachments.values()];
  const pools = [...d.pools.values()];
  const cap = pools.reduce((a, p) => a + Number((p.status || {}).capacity_bytes || 0), 0);
  const used = pools.reduce((a, p) => a + Number((p.status || {}).allocated_bytes || 0), 0);
  const notReady = [];
  for (const [kind, list] of [['node', nodes], ['volume', vols], ['attachment', atts]]) {
    for (const o of list) {
      const r = ready(o);
      if (!r.ok) notReady.push('<li>' + esc(kind + '/' + name(o)) + ': <span class="warn">' + esc(r.text) + '</span> ' + esc(r.why) + '</li>');
    }
  }
  const soon = vols.filter((v) => v.spec && v.spec.expires_at && Date.parse(v.spec.expires_at) - Date.now() < 7 * 86400e3)
    .map((v) => '<li>volume/' + esc(name(v)) + ' (' + esc(v.spec.tenant) + ') expires <span data-expires="' + esc(v.spec.expires_at) + '">' + esc(countdown(v.spec.expires_at)) + '</span></li>');
  const card = (title, big, sub) => '<div class="card"><div class="sub">' + esc(title) + '</div><div class="big">' + esc(big) + '</div><div class="sub">' + sub + '</div></div>';
  $('page-overview').innerHTML =
    '<h2>Overview</h2><div class="cards">' +
    card('Nodes ready', nodes.filter((n) => ready(n).ok).length + ' / ' + nodes.length, '') +
    (S.admin ? card('Pools', bytes(used) + ' of ' + bytes(cap), bar(used, cap)) : '') +
    card('Volumes ready', vols.filter((v) => ready(v).ok).length + ' / ' + vols.length, '') +
    card('Attachments', atts.filter((a) => word((a.status || {}).phase, 'ATTACHMENT_PHASE_') === 'ATTACHED').length + ' attached of ' + atts.length, '') +
    card('Controller', S.version || '?', '') +
    '</div><h2>Not ready</h2>' + (notReady.length ? '<ul class="plain">' + notReady.join('') + '</ul>' : '<p class="ok">Everything is ready.</p>') +
    '<h2>Expiring within 7 days</h2>' + (soon.length ? '<ul class="plain">' + soon.join('') + '</ul>' : '<p>No burst volume expires soon.</p>');
}

function renderNodes() {
  const rows = [...S.data.nodes.values()].sort((a, b) => name(a).localeCompare(name(b))).map((n) => {
    const r = ready(n);
    const st = n.status || {};
    const roles = ((n.spec || {}).roles || []).map((x) => word(x, 'NODE_ROLE_').toLowerCase()).join(', ');
    const capacity = st.capacity_bytes ? bytes(st.free_bytes) + ' free of ' + bytes(st.capacity_bytes) : '–';
    return '<tr><td>' + esc(name(n)) + '</td><td>' + esc(roles) + '</td><td class="' + (r.ok ? 'ok' : 'bad') + '" title="' + esc(r.why) + '">' + esc(r.text) +
      '</td><td>' + esc(capacity) + '</td><td class="hide-narrow">' + esc(st.agent_version || '') + '</td><td class="hide-narrow">' + esc(st.last_heartbeat || '') + '</td></tr>';
  });
  $('page-nodes').innerHTML = '<h2>Nodes</h2>' + table([{ label: 'Name' }, { label: 'Roles' }, { label: 'Ready' }, { label: 'Capacity' }, { label: 'Agent', cls: 'hide-narrow' }, { label: 'Last heartbeat', cls: 'hide-narrow' }], rows);
}

function renderPools() {
  const rows = [...S.data.pools.values()].sort((a, b) => name(a).localeCompare(name(b))).map((p) => {
    const st = p.status || {};
    const cap = Number(st.capacity_bytes || 0);
    const total = cap > 0 ? Number(st.allocated_bytes || 0) + Number(st.free_bytes || 0) : 0;
    return '<tr><td>' + esc(name(p)) + '</td><td>' + esc((p.spec || {}).node) + '</td><td>' + bar(st.allocated_bytes, total) +
      '</td><td>' + esc(bytes(st.allocated_bytes) + ' of ' + bytes(total)) + '</td><td>' + esc(st.volume_count || 0) + '</td></tr>';
  });
  $('page-pools').innerHTML = '<h2>Pools</h2>' + table([{ label: 'Name' }, { label: 'Node' }, { label: 'Usage' }, { label: 'Allocated' }, { label: 'Volumes' }], rows);
}

function attachmentsOf(vol) {
  return [...S.data.attachments.values()].filter((a) => (a.spec || {}).volume === vol);
}
function volumeRow(v) {
  const sp = v.spec || {};
  const st = v.status || {};
  const atts = attachmentsOf(name(v));
  return {
    v, name: name(v), tenant: sp.tenant || '', size: Number(st.size_bytes || 0), sizeText: sp.size || '',
    placement: (st.pool || sp.pool || '') + (st.node ? ' on ' + st.node : ''),
    phase: word(st.phase, 'VOLUME_PHASE_') || 'PENDING',
    attachment: atts.map((a) => (a.spec || {}).node + ' (' + (word((a.status || {}).phase, 'ATTACHMENT_PHASE_') || 'PENDING').toLowerCase() + ')').join(', '),
    expires: sp.expires_at || '', atts,
  };
}
function renderVolumes() {
  const f = $('vol-filter').value.trim().toLowerCase();
  let rows = [...S.data.volumes.values()].map(volumeRow);
  if (f) rows = rows.filter((r) => [r.name, r.tenant, r.placement, r.phase, r.attachment].join(' ').toLowerCase().includes(f));
  const k = S.sort.key;
  rows.sort((a, b) => (k === 'size' ? a.size - b.size : String(a[k]).localeCompare(String(b[k]))) * S.sort.dir || a.name.localeCompare(b.name));
  const html = rows.map((r) => {
    const n = esc(r.name);
    const b = (act, label, cls) => '<button type="button" data-act="' + act + '" data-name="' + n + '"' + (cls ? ' class="' + cls + '"' : '') + ' aria-label="' + label + ' ' + n + '">' + label + '</button>';
    const acts = '<div class="acts">' + [r.atts.length ? b('move', 'Move') + b('detach', 'Detach') : b('attach', 'Attach'), b('resize', 'Resize'), r.expires ? b('extend', 'Extend') : '', b('delete', 'Delete', 'danger')].join('') + '</div>';
    const phaseCls = r.phase === 'READY' ? 'ok' : r.phase === 'FAILED' ? 'bad' : 'warn';
    return '<tr data-volume="' + n + '"><td>' + n + '</td><td>' + esc(r.tenant) + '</td><td>' + esc(r.sizeText) + '</td><td>' + esc(r.placement) +
      '</td><td class="' + phaseCls + '">' + esc(r.phase) + '</td><td>' + esc(r.attachment || '–') + '</td><td>' +
      (r.expires ? '<span data-expires="' + esc(r.expires) + '">' + esc(countdown(r.expires)) + '</span>' : '–') + '</td><td class="actions">' + acts + '</td></tr>';
  });
  keepFocus($('vol-table'), table([
    { label: 'Name', key: 'name' }, { label: 'Tenant', key: 'tenant' }, { label: 'Size', key: 'size' }, { label: 'Placement', key: 'placement' },
    { label: 'Phase', key: 'phase' }, { label: 'Attachment', key: 'attachment' }, { label: 'Expires', key: 'expires' }, { label: 'Actions' }], html, true));
}

function renderTenants() {
  const rows = [...S.data.tenants.values()].sort((a, b) => name(a).localeCompare(name(b))).map((t) => {
    const sp = t.spec || {};
    const st = t.status || {};
    const quota = sizeBytes(sp.capacity_quota);
    return '<tr><td>' + esc(name(t)) + '</td><td>' + (quota ? bar(st.used_bytes, quota) : '') + '</td><td>' + esc(bytes(st.used_bytes) + ' of ' + (quota ? bytes(quota) : 'unlimited')) +
      '</td><td>' + esc((st.volume_count || 0) + (sp.volume_quota ? ' of ' + sp.volume_quota : '')) + '</td><td>' + esc((sp.allowed_nodes || []).join(', ')) + '</td></tr>';
  });
  $('page-tenants').innerHTML = '<h2>Tenants</h2>' + table([{ label: 'Name' }, { label: 'Quota usage' }, { label: 'Used' }, { label: 'Volumes' }, { label: 'Allowed nodes' }], rows);
}
function sizeBytes(text) {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?$/i.exec((text || '').trim());
  if (!m) return 0;
  const unit = (m[2] || 'B').toUpperCase().replace('IB', '').replace('B', '');
  const pow = { '': 0, K: 1, M: 2, G: 3, T: 4, P: 5 }[unit] || 0;
  const base = /i/i.test(m[2] || '') || !m[2] ? 1024 : 1000;
  return Number(m[1]) * Math.pow(base, pow);
}

// The events timeline, when the controller serves /v1/events (whoami's
// features.events): polled, newest first.
async function pollEvents(signal) {
  while (!signal.aborted) {
    try {
      S.eventItems = (await api('GET', '/v1/events?limit=200')).items || [];
      render();
    } catch (e) {
      if (e.status === 401) return signOut('Your token is no longer valid');
    }
    await new Promise((res) => setTimeout(res, 5000));
  }
}
function renderEvents() {
  const rows = S.eventItems.slice().reverse().map((e) => {
    const when = e.time || e.timestamp || e.last_timestamp || '';
    const obj = e.object || e.involved_object || {};
    const what = typeof obj === 'string' ? obj : [obj.kind, obj.name].filter(Boolean).join('/');
    return '<tr><td>' + esc(when) + '</td><td>' + esc(e.type || e.severity || '') + '</td><td>' + esc(e.reason || '') +
      '</td><td>' + esc(what) + '</td><td>' + esc(e.message || '') + '</td></tr>';
  });
  $('page-events').innerHTML = '<h2>Events</h2>' + table([{ label: 'When' }, { label: 'Type' }, { label: 'Reason' }, { label: 'Object' }, { label: 'Message' }], rows);
}

// ---------------------------------------------------------------- actions
function field(label, id, input) { return '<label for="' + id + '">' + esc(label) + input.replace('<X', '<input id="' + id + '" name="' + id + '"') + '</label>'; }
function select(label, id, options) {
  return '<label for="' + id + '">' + esc(label) + '<select id="' + id + '" name="' + id + '">' + options.map((o) => '<option value="' + esc(o[0]) + '">' + esc(o[1]) + '</option>').join('') + '</select></label>';
}
// Opens the confirmation dialog; `run` does the request and throws the
// controller's refusal, which stays shown in the dialog.
function dialog(title, body, okLabel, run) {
  const d = $('dialog');
  $('dialog-h').textContent = title;
  $('dialog-body').innerHTML = body;
  $('dialog-error').textContent = '';
  $('dialog-ok').textContent = okLabel;
  $('dialog-ok').className = /delete|detach/i.test(okLabel) ? 'danger' : '';
  $('dialog-form').onsubmit = async (ev) => {
    ev.preventDefault();
    $('dialog-ok').disabled = true;
    try {
      const msg = await run(new FormData($('dialog-form')));
      d.close();
      toast(msg);
    } catch (e) {
      $('dialog-error').textContent = e.message;
    } finally {
      $('dialog-ok').disabled = false;
    }
  };
  d.showModal();
  const first = d.querySelector('#dialog-body input, #dialog-body select') || $('dialog-ok');
  first.focus();
}
function workstations(volume) {
  const v = S.data.volumes.get(volume);
  const t = v && S.data.tenants.get((v.spec || {}).tenant);
  const allowed = (t && t.spec && t.spec.allowed_nodes) || [];
  const nodes = [...S.data.nodes.values()].filter((n) => ((n.spec || {}).roles || []).includes('NODE_ROLE_WORKSTATION')).map(name);
  const all = [...new Set([...allowed, ...nodes])].sort();
  return all.map((n) => [n, n]);
}
const ACTIONS = {
  attach(vol) {
    dialog('Attach ' + vol, select('Workstation', 'node', workstations(vol)) +
      select('Access mode', 'mode', [['ACCESS_MODE_READ_WRITE', 'read-write'], ['ACCESS_MODE_READ_ONLY', 'read-only'], ['ACCESS_MODE_READ_WRITE_MANY', 'read-write-many']]), 'Attach', async (f) => {
      const node = f.get('node');
      await api('POST', '/v1/attachments', { metadata: { name: vol + '-' + node }, spec: { volume: vol, node, mode: f.get('mode') } });
      return 'Attaching ' + vol + ' to ' + node;
    });
  },
  move(vol) {
    dialog('Move ' + vol, select('To workstation', 'to', workstations(vol)) + '<p class="hint">The new workstation connects once the old one has let go (the move is fenced).</p>', 'Move', async (f) => {
      await api('POST', '/v1/volumes/' + encodeURIComponent(vol) + '/move', { to: f.get('to') });
      return 'Moving ' + vol + ' to ' + f.get('to');
    });
  },
  detach(vol) {
    const atts = attachmentsOf(vol);
    dialog('Detach ' + vol, '<p>Detach ' + esc(vol) + ' from ' + esc(atts.map((a) => a.spec.node).join(', ')) + '? Unmount it there first.</p>', 'Detach', async () => {
      for (const a of atts) await api('DELETE', '/v1/attachments/' + encodeURIComponent(name(a)));
      return 'Detaching ' + vol;
    });
  },
  resize(vol) {
    const v = S.data.volumes.get(vol);
    dialog('Resize ' + vol, field('New size (volumes only grow)', 'size', '<X value="' + esc((v.spec || {}).size) + '" required>'), 'Resize', async (f) => {
      await api('POST', '/v1/volumes/' + encodeURIComponent(vol) + '/resize', { size: f.get('size') });
      return vol + ' resized to ' + f.get('size');
    });
  },
  extend(vol) {
    dialog('Extend ' + vol, field('Extend by (e.g. 7d, 12h)', 'by', '<X value="7d" required>'), 'Extend', async (f) => {
      await api('POST', '/v1/volumes/' + encodeURIComponent(vol) + '/extend', { by: f.get('by') });
      return vol + ' extended by ' + f.get('by');
    });
  },
  delete(vol) {
    dialog('Delete ' + vol, '<p>Delete volume <strong>' + esc(vol) + '</strong> and its data? This cannot be undone.</p>', 'Delete', async () => {
      await api('DELETE', '/v1/volumes/' + encodeURIComponent(vol));
      return 'Deleting ' + vol;
    });
  },
  create() {
    const tenants = [...S.data.tenants.keys()].sort().map((t) => [t, t]);
    const pools = [['', '(any pool)'], ...[...S.data.pools.keys()].sort().map((p) => [p, p])];
    dialog('Create volume', field('Name', 'name', '<X required pattern="[a-z0-9]([a-z0-9\\-]*[a-z0-9])?" autocomplete="off">') +
      select('Tenant', 'tenant', tenants) + field('Size (e.g. 10GiB)', 'size', '<X required value="10GiB">') +
      (S.admin ? select('Pool', 'pool', pools) : '') +
      field('Expires in (burst, optional: 7d, 12h)', 'expires', '<X autocomplete="off">'), 'Create', async (f) => {
      const spec = { tenant: f.get('tenant'), size: f.get('size') };
      if (f.get('pool')) spec.pool = f.get('pool');
      const exp = (f.get('expires') || '').trim();
      if (exp) {
        const secs = duration(exp);
        if (secs == null) throw new Error('invalid expiry: use a number and s, m, h or d (e.g. 7d)');
        spec.expires_at = new Date(Date.now() + secs * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
      }
      await api('POST', '/v1/volumes', { metadata: { name: f.get('name') }, spec });
      return 'Created ' + f.get('name');
    });
  },
};

// ---------------------------------------------------------------- wiring
function init() {
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('signin-error').textContent = '';
    try {
      await signIn($('token').value.trim());
      $('token').value = '';
    } catch (e) {
      S.token = null;
      $('signin-error').textContent = 'Sign-in refused: ' + e.message;
    }
  });
  $('signout').addEventListener('click', () => signOut(''));
  $('nav').addEventListener('click', (ev) => { const b = ev.target.closest('button'); if (b) show(b.dataset.page); });
  $('vol-filter').addEventListener('input', render);
  $('vol-create').addEventListener('click', () => ACTIONS.create());
  $('dialog-cancel').addEventListener('click', () => $('dialog').close());
  $('page-volumes').addEventListener('click', (ev) => {
    const s = ev.target.closest('[data-sort]');
    if (s) {
      S.sort = { key: s.dataset.sort, dir: S.sort.key === s.dataset.sort ? -S.sort.dir : 1 };
      render();
      return;
    }
    const b = ev.target.closest('[data-act]');
    if (b && ACTIONS[b.dataset.act]) ACTIONS[b.dataset.act](b.dataset.name);
  });
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-expires]')) el.textContent = countdown(el.dataset.expires);
  }, 1000);
  const saved = sessionStorage.getItem('ferrofab-token');
  if (saved) signIn(saved).catch((e) => signOut('Sign-in refused: ' + e.message));
}
document.addEventListener('DOMContentLoaded', init);
