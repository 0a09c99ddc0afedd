// siphon console: plain JavaScript, no framework, nothing loaded from elsewhere.
//
// Rules this file keeps:
// - The credentials live in one variable (`auth`) and nowhere else: no storage, no
//   cookies. Reloading the page signs out.
// - Every value from the server reaches the page as text (textContent, text nodes,
//   attributes set one by one); no HTML is ever parsed from data.
// - Every API call sends `X-Siphon-Console: 1`, so a 401 comes without
//   `WWW-Authenticate` and the browser shows no password dialog.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  let auth = null; // "Basic ...": the only copy of the credentials
  let me = null; // GET /$me: {client_id, admin, scope}; decides which screens and buttons show
  let view = 'overview';
  let timer = null;
  let pollMs = 2000;
  let busy = false;
  let samples = []; // {t, count}: resources loaded, for the load rate and its live chart, from successive polls
  const LIVE_MS = 10 * 60 * 1000; // what a live chart shows

  const files = { filters: { status: '', bucket: '', type: '', import: '' }, count: 100, errorsOf: null, errorsOffset: 0 };
  const sessions = { open: null, samples: [] };
  const exportsState = { open: null, samples: [] };

  const VIEWS = ['overview', 'files', 'import', 'sessions', 'exports', 'dead'];
  const GZIP_RATIO = 8; // a guess of ndjson's gzip ratio until a finished file tells better

  // ---- rendering helpers (text only) -------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = String(v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k === 'href') { const u = safeUrl(v); if (u) node.setAttribute('href', u); }
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Only http(s) links, so a value can never become `javascript:`.
  function safeUrl(value) {
    try {
      const u = new URL(String(value), location.href);
      return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
    } catch {
      return null;
    }
  }

  const nf = new Intl.NumberFormat('en-US');
  const num = (n) => (n === null || n === undefined || n === '' ? '—' : nf.format(n));

  // ---- charts (SVG built node by node, values as numbers only) ------------------------

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c);
    return node;
  }

  // Keeps `list` (of {t, count}) to the last LIVE_MS and adds `count` now.
  function sample(list, count) {
    const now = performance.now();
    list.push({ t: now, count: Number(count) || 0 });
    while (list.length && now - list[0].t > LIVE_MS) list.shift();
    return list;
  }

  // Resources per second between successive samples: [{t, rate}].
  function rates(list) {
    const out = [];
    for (let i = 1; i < list.length; i++) {
      const dt = (list[i].t - list[i - 1].t) / 1000;
      if (dt > 0) out.push({ t: list[i].t, rate: Math.max(0, (list[i].count - list[i - 1].count) / dt) });
    }
    return out;
  }

  // A chart of `values` (numbers, oldest first) as a line or bars, with a caption that
  // says in words what it shows (the SVG is its picture: role img, the same label).
  function chart(key, title, values, { bars = false, note = '', total = null } = {}) {
    const W = 300, H = 80;
    const max = Math.max(0, ...values);
    const top = max > 0 ? max : 1;
    const last = values.length ? values[values.length - 1] : 0;
    const words = title + ': ' + (values.length
      ? 'peak ' + num(Math.round(max)) + '/s, latest ' + num(Math.round(last)) + '/s'
      : 'no data yet') + (total !== null ? ', ' + num(total) + ' resources in all' : '');
    const picture = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', role: 'img', 'aria-label': words });
    picture.append(svg('line', { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: 'axis' }));
    if (bars) {
      const w = W / Math.max(1, values.length);
      values.forEach((v, i) => {
        const h = (v / top) * (H - 4);
        if (h > 0) picture.append(svg('rect', { x: (i * w + 0.5).toFixed(2), y: (H - h).toFixed(2), width: Math.max(0.5, w - 1).toFixed(2), height: h.toFixed(2) }));
      });
    } else if (values.length) {
      const y = (v) => (H - 2 - (v / top) * (H - 6)).toFixed(1);
      // One value is a short stroke at the right edge (the latest); more are a line.
      const pts = values.length === 1
        ? (W - 10) + ',' + y(values[0]) + ' ' + W + ',' + y(values[0])
        : values.map((v, i) => (i * (W / (values.length - 1))).toFixed(1) + ',' + y(v)).join(' ');
      picture.append(svg('polyline', { points: pts }));
    }
    return el('figure', {
      class: 'chart', 'data-chart': key, 'data-points': String(values.length),
      'data-max': String(Math.round(max)), 'data-total': total === null ? null : String(total),
    },
    el('figcaption', {}, el('span', { class: 'chart-title' }, title),
      el('span', { class: 'chart-figures' }, values.length ? 'peak ' + num(Math.round(max)) + '/s · latest ' + num(Math.round(last)) + '/s' : 'no data yet')),
    picture,
    note ? el('p', { class: 'sub' }, note) : null);
  }

  // The live chart of a running job from its samples.
  function liveChart(key, title, list) {
    return chart(key, title, rates(list).map((r) => r.rate),
      { note: 'From this page\'s polls (every ' + (pollMs / 1000) + ' s), up to the last 10 minutes.' });
  }

  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let v = Number(n);
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
  }

  function time(s) {
    if (!s) return '—';
    const d = new Date(s);
    if (Number.isNaN(d.getTime())) return String(s);
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  // A time for a table cell: date and time each kept on one line.
  function when(s) {
    const [day, clock] = time(s).split(' ');
    return clock ? [el('span', { class: 'nowrap' }, day), ' ', el('span', { class: 'nowrap' }, clock)] : [day];
  }

  function duration(ms) {
    if (ms === null || !Number.isFinite(ms) || ms < 0) return '—';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + Math.round(s - m * 60) + ' s';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min';
    return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }

  function badge(status) {
    return el('span', { class: 'badge ' + String(status).replace(/[^a-z-]/g, '') }, String(status));
  }

  function td(label, props, ...children) {
    return el('td', Object.assign({ 'data-label': label }, props || {}), ...children);
  }

  function emptyRow(tbody, cols, text) {
    tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: String(cols) }, text)));
  }

  // Re-renders `container` keeping the keyboard focus on the control with the same key.
  function keepFocus(container, render) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.getAttribute('data-key') : null;
    render();
    if (key) {
      const again = container.querySelector('[data-key="' + CSS.escape(key) + '"]');
      if (again) again.focus();
    }
  }

  function say(node, text, ok) {
    node.textContent = text;
    node.className = ok ? 'message-ok' : 'message-error';
    node.hidden = !text;
  }

  let noticeTimer = null;
  function notice(text, ok = true) {
    const n = $('notice');
    say(n, text, ok);
    clearTimeout(noticeTimer);
    if (text) noticeTimer = setTimeout(() => { n.hidden = true; }, 20000);
  }

  // ---- the API ------------------------------------------------------------------------

  function basic(id, secret) {
    let bin = '';
    for (const b of new TextEncoder().encode(id + ':' + secret)) bin += String.fromCharCode(b);
    return 'Basic ' + btoa(bin);
  }

  function messageOf(status, data) {
    if (data && typeof data === 'object') {
      if (typeof data.message === 'string') return data.message;
      if (data.error && typeof data.error.message === 'string') return data.error.message;
      if (Array.isArray(data.issue) && data.issue[0] && data.issue[0].diagnostics) return String(data.issue[0].diagnostics);
    }
    if (typeof data === 'string' && data) return data.slice(0, 500);
    return 'HTTP ' + status;
  }

  async function api(method, path, body, credentials) {
    const headers = {
      Authorization: credentials || auth,
      'X-Siphon-Console': '1',
      Accept: 'application/json',
    };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer' };
    // A state-changing request always says its body is JSON, even an empty one: the API
    // refuses a POST without it (a cross-site form could send one with no preflight).
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    } else if (method !== 'GET' && method !== 'HEAD') {
      headers['Content-Type'] = 'application/json';
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      return { status: 0, ok: false, data: null, headers: new Headers(), message: 'The API cannot be reached: ' + e.message };
    }
    const text = await r.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = text; }
    }
    const res = { status: r.status, ok: r.ok, data, headers: r.headers, message: messageOf(r.status, data) };
    if (r.status === 401 && !credentials && auth) {
      signOut('The API no longer accepts these credentials (401). Sign in again.');
    }
    return res;
  }

  // ---- sign-in ------------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const id = $('signin-id').value.trim();
    const secret = $('signin-secret').value;
    const error = $('signin-error');
    error.hidden = true;
    if (!id || !secret) {
      error.textContent = 'Enter the client id and its secret.';
      error.hidden = false;
      return;
    }
    $('signin-submit').disabled = true;
    const candidate = basic(id, secret);
    const r = await api('GET', '/$me', undefined, candidate);
    $('signin-submit').disabled = false;
    if (r.status === 401) {
      error.textContent = 'Wrong client id or secret (401): the API did not accept them.';
    } else if (r.status === 403) {
      error.textContent = 'Client "' + id + '" is known, but no AccessPolicy allows it (403): ' + r.message;
    } else if (!r.ok) {
      error.textContent = 'Cannot sign in (' + (r.status || 'no answer') + '): ' + r.message;
    } else {
      auth = candidate;
      me = r.data && typeof r.data === 'object' ? r.data : { admin: false, scope: '' };
      $('signin-secret').value = '';
      $('who-name').textContent = id + (me.admin ? ' (admin)' : '');
      $('who-name').title = me.admin ? 'the admin: every screen and action' : 'scopes: ' + (me.scope || 'none');
      applyRights();
      $('view-signin').hidden = true;
      $('nav').hidden = false;
      $('who').hidden = false;
      const wanted = location.hash.replace(/^#/, '');
      show(VIEWS.includes(wanted) && allowed(wanted) ? wanted : 'overview', true);
      schedule();
      return;
    }
    error.hidden = false;
    $('signin-secret').focus();
  }

  // True when some type may be created and updated (a load writes): SMART v2 `.cu`
  // (letters in cruds order), or v1 `.write` / `.*`.
  function canLoad() {
    if (!me) return false;
    if (me.admin) return true;
    return String(me.scope || '').split(/\s+/).some((s) => {
      const m = /^system\/[^.\s]+\.(.+)$/.exec(s);
      if (!m) return false;
      const p = m[1];
      return p === 'write' || p === '*' || (/^c?r?u?d?s?$/.test(p) && p.includes('c') && p.includes('u'));
    });
  }

  // Screens and buttons the caller's rights do not allow are not shown at all: dead
  // letters and deleting LoaderFiles are the admin's; importing needs write scopes.
  function applyRights() {
    const nav = (v) => document.querySelector('#nav button[data-view="' + v + '"]');
    nav('dead').hidden = !(me && me.admin);
    nav('import').hidden = !canLoad();
  }

  function allowed(v) {
    if (v === 'dead') return !!(me && me.admin);
    if (v === 'import') return canLoad();
    return true;
  }

  function signOut(message) {
    auth = null;
    me = null;
    clearInterval(timer);
    timer = null;
    samples = [];
    sessions.open = null;
    exportsState.open = null;
    files.errorsOf = null;
    for (const id of ['overview-cards', 'overview-extra', 'files-body', 'errors-body', 'sessions-body', 'inputs-body', 'exports-body', 'export-body', 'dead-body', 'plan-body']) {
      $(id).replaceChildren();
    }
    for (const id of ['errors-panel', 'session-detail', 'export-detail', 'import-plan', 'nav', 'who', 'notice', 'session-message', 'export-message', 'dead-message', 'import-error']) $(id).hidden = true;
    for (const id of ['files-count', 'errors-file', 'errors-error', 'session-summary', 'session-error', 'who-name']) $(id).textContent = '';
    setFilters({});
    for (const v of VIEWS) $('view-' + v).hidden = true;
    $('view-signin').hidden = false;
    $('signin-secret').value = '';
    const error = $('signin-error');
    error.textContent = message || '';
    error.hidden = !message;
    $('signin-id').focus();
  }

  // ---- views and polling --------------------------------------------------------------

  const loaders = {
    overview: loadOverview,
    files: loadFiles,
    import: null,
    sessions: loadSessions,
    exports: loadExports,
    dead: loadDead,
  };

  function show(name, focus) {
    if (!allowed(name)) name = 'overview';
    view = name;
    for (const v of VIEWS) $('view-' + v).hidden = v !== name;
    for (const b of document.querySelectorAll('#nav button')) {
      if (b.dataset.view === name) b.setAttribute('aria-current', 'page');
      else b.removeAttribute('aria-current');
    }
    history.replaceState(null, '', '#' + name);
    if (focus) {
      const h = $(name + '-title');
      h.setAttribute('tabindex', '-1');
      h.focus();
    }
    refresh(true);
  }

  // `force`: the user asked (a screen opened, an action done), not the timer.
  let again = false;
  async function refresh(force) {
    if (!auth) return;
    if (busy) {
      // One load at a time; what was asked meanwhile runs right after.
      if (force === true) again = true;
      return;
    }
    const load = loaders[view];
    if (!load) return;
    busy = true;
    try {
      await load(force === true);
    } catch (e) {
      notice('The console failed to show this screen: ' + e.message, false);
    } finally {
      busy = false;
      if (again) {
        again = false;
        refresh(true);
      }
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = auth && pollMs > 0 ? setInterval(refresh, pollMs) : null;
  }

  // ---- overview -----------------------------------------------------------------------

  function stat(key, label, value, title) {
    return el('div', { class: 'stat stat-' + key, 'data-stat': key, title },
      el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));
  }

  async function loadOverview() {
    const r = await api('POST', '/rpc', { method: 'aidbox.bulk/load-from-bucket-status' });
    if (!auth) return;
    if (!r.ok) {
      $('overview-cards').replaceChildren(el('p', { class: 'error' }, 'Status (' + r.status + '): ' + r.message));
      return;
    }
    const s = r.data.result || {};
    const f = s.files || {};
    const res = s.resources || {};
    const now = performance.now();
    sample(samples, res.loaded);
    // Over the last ~10 s of polls.
    const last = samples[samples.length - 1];
    const first = samples.find((x) => now - x.t <= 10500) || last;
    let rate = '—';
    if (first !== last && last.t > first.t) {
      rate = num(Math.max(0, Math.round((last.count - first.count) / ((last.t - first.t) / 1000)))) + '/s';
    }
    const minutes = ((s.throughput || {})['loaded-per-minute'] || []).map((n) => Number(n) || 0);
    const hour = minutes.reduce((a, b) => a + b, 0);
    $('overview-charts').replaceChildren(
      liveChart('live', 'Resources loaded per second, live', samples),
      chart('hour', 'Resources loaded per second, last hour', minutes.map((n) => n / 60), {
        bars: true, total: hour,
        note: 'Per-minute averages of every loader\'s work (from the LoaderFiles), oldest on the left; the last bar is the minute under way.',
      }),
    );
    $('overview-cards').replaceChildren(
      stat('pending', 'Files pending', num(f.pending)),
      stat('in-progress', 'Files loading', num(f['in-progress'])),
      stat('done', 'Files done', num(f.done)),
      stat('error', 'Files in error', num(f.error)),
      stat('total', 'Files in all', num(s['total-files'])),
      stat('loaded', 'Resources loaded', num(res.loaded)),
      stat('failed', 'Invalid lines', num(res.failed)),
      stat('rate', 'Load rate', rate, 'resources per second, from this page\'s last polls'),
    );
    const dropped = s['indexes-dropped'] || [];
    $('overview-extra').replaceChildren(dropped.length
      ? el('p', { class: 'notice' }, 'Tables loading without their indexes (rebuilt when their load ends): ',
        dropped.map((d) => (typeof d === 'string' ? d : JSON.stringify(d))).join(', '))
      : '');
  }

  // ---- LoaderFiles --------------------------------------------------------------------

  function location_(f) {
    return f.url || 's3://' + f.bucket + '/' + f.file;
  }

  // A path as text that may break after each `/`.
  function breakable(text) {
    const parts = String(text).split(/(?<=\/)/);
    return parts.flatMap((p, i) => (i < parts.length - 1 ? [p, el('wbr')] : [p]));
  }

  function isGzip(f) {
    return /\.gz$/i.test(f.url ? f.url.split('?')[0] : f.file || '');
  }

  // How much of a file is loaded, 0..1 (null when unknown): uncompressed bytes read
  // against the object's size; for gzip objects the size is scaled by the ratio finished
  // files showed (an estimate).
  function progressOf(f, ratio) {
    const cp = f.checkpoint || {};
    const line = Number(cp.line) || 0;
    const read = Number(cp.bytes) || 0;
    if (f.status === 'done') return { value: 1, text: num(line) + ' lines read, ' + num(f.loaded) + ' loaded' };
    let value = null;
    let estimate = false;
    if (f.size > 0) {
      if (isGzip(f)) {
        value = Math.min(read / (f.size * ratio), 0.99);
        estimate = true;
      } else {
        value = Math.min(read / f.size, 1);
      }
    }
    if (f.status === 'pending' && line === 0) return { value: 0, text: 'queued' };
    const stopped = f.status === 'error' || f.status === 'aborted';
    const share = value === null || stopped ? '' : ' (' + (estimate ? '~' : '') + Math.round(value * 100) + '%)';
    const text = (stopped ? 'stopped: ' : '') + num(line) + ' lines read, ' + num(f.loaded) + ' loaded' + share;
    return { value, text, estimate };
  }

  function gzipRatio(list) {
    const ratios = list
      .filter((f) => f.status === 'done' && isGzip(f) && f.size >= 65536 && f.checkpoint && f.checkpoint.bytes > 0)
      .map((f) => f.checkpoint.bytes / f.size)
      .sort((a, b) => a - b);
    return ratios.length ? ratios[Math.floor(ratios.length / 2)] : GZIP_RATIO;
  }

  function filesQuery() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(files.filters)) if (v) q.set(k, v);
    q.set('_count', String(files.count));
    return q.toString();
  }

  function setFilters(filters) {
    files.filters = Object.assign({ status: '', bucket: '', type: '', import: '' }, filters);
    files.count = 100;
    $('filter-status').value = files.filters.status;
    $('filter-bucket').value = files.filters.bucket;
    $('filter-type').value = files.filters.type;
    $('filter-import').value = files.filters.import;
  }

  async function loadFiles() {
    const r = await api('GET', '/LoaderFile?' + filesQuery());
    if (!auth) return;
    const tbody = $('files-body');
    if (!r.ok) {
      emptyRow(tbody, 10, 'LoaderFiles (' + r.status + '): ' + r.message);
      return;
    }
    const list = (r.data.entry || []).map((e) => e.resource || {});
    const active = Object.entries(files.filters).filter(([, v]) => v).map(([k, v]) => k + ' = ' + v);
    $('files-count').textContent = list.length + (list.length === 1 ? ' file' : ' files') + (active.length ? ' where ' + active.join(', ') : '');
    $('files-more').hidden = list.length < files.count;
    const ratio = gzipRatio(list);
    keepFocus(tbody, () => {
      if (!list.length) {
        emptyRow(tbody, 10, 'No LoaderFiles' + (active.length ? ' match these filters.' : ' yet.'));
        return;
      }
      tbody.replaceChildren(...list.map((f) => fileRow(f, ratio)));
    });
  }

  function fileRow(f, ratio) {
    const p = progressOf(f, ratio);
    const started = f.start ? Date.parse(f.start) : null;
    const ended = f.end ? Date.parse(f.end) : null;
    const took = started ? (ended || (f.status === 'in-progress' ? Date.now() : null)) - started : null;
    const bar = el('progress', {
      max: '1000',
      'aria-label': 'Progress of ' + location_(f),
      title: p.estimate ? 'estimated from the gzip size' : undefined,
    });
    if (p.value !== null) bar.value = Math.round(p.value * 1000);
    const status = [badge(f.status)];
    if (f.stalled && f.stalled.since) {
      status.push(el('span', { class: 'sub', 'data-role': 'stalled' }, badge('stalled'), ' since ' + time(f.stalled.since)));
    }
    if (f.error) status.push(el('span', { class: 'sub error', 'data-role': 'error' }, f.error));
    if (f.recovery) {
      status.push(el('span', { class: 'sub' }, 'recovered ' + num(f.recovery.count) + '× (' + (f.recovery.how || '?') + ') at ' + time(f.recovery.at)));
    }
    const actions = [];
    if (Number(f.failed) > 0 || f.status === 'error') {
      actions.push(el('button', {
        type: 'button', class: 'small', 'data-key': 'errors:' + f.id, 'data-action': 'errors',
        on: { click: () => openErrors(f) },
      }, Number(f.failed) > 0 ? 'Invalid lines' : 'Error'));
    }
    if (me && me.admin) {
      actions.push(el('button', {
        type: 'button', class: 'small danger', 'data-key': 'delete:' + f.id, 'data-action': 'delete',
        on: { click: () => deleteFile(f) },
      }, 'Delete'));
    }
    return el('tr', { 'data-id': f.id, 'data-status': f.status, class: files.errorsOf === f.id ? 'selected' : undefined },
      td('File', { class: 'file' }, breakable(location_(f)),
        el('span', { class: 'sub' }, [f.size ? bytes(f.size) : null, f.import ? 'session ' + f.import : null, 'id ' + f.id].filter(Boolean).join(' · '))),
      td('Type', {}, f.type || '(per line)'),
      td('Status', {}, status),
      td('Progress', { class: 'progress', 'data-progress': p.value === null ? '' : p.value.toFixed(3) }, bar, el('span', { class: 'sub' }, p.text)),
      td('Loaded', { class: 'num', 'data-role': 'loaded' }, num(f.loaded)),
      td('Invalid', { class: 'num', 'data-role': 'failed' }, num(f.failed)),
      td('Start', {}, when(f.start)),
      td('End', {}, when(f.end)),
      td('Duration', { class: 'num' }, duration(took)),
      td('Actions', {}, el('div', { class: 'actions' }, actions)),
    );
  }

  async function openErrors(f) {
    files.errorsOf = f.id;
    files.errorsOffset = 0;
    $('errors-title').textContent = 'Invalid lines of ' + (f.file || f.url || f.id);
    $('errors-file').textContent = location_(f) + ' · ' + num(f.failed) + ' invalid lines · status ' + f.status;
    $('errors-error').textContent = f.error ? 'Error: ' + f.error : '';
    $('errors-body').replaceChildren();
    $('errors-panel').hidden = false;
    for (const row of document.querySelectorAll('#files-body tr')) row.classList.toggle('selected', row.dataset.id === f.id);
    await moreErrors();
    const h = $('errors-title');
    h.setAttribute('tabindex', '-1');
    h.focus();
  }

  async function moreErrors() {
    const id = files.errorsOf;
    if (!id) return;
    const page = 100;
    const r = await api('GET', '/LoaderFile/' + encodeURIComponent(id) + '/$errors?_count=' + page + '&_offset=' + files.errorsOffset);
    if (!auth || files.errorsOf !== id) return;
    const tbody = $('errors-body');
    if (!r.ok) {
      emptyRow(tbody, 3, 'Invalid lines (' + r.status + '): ' + r.message);
      $('errors-more').hidden = true;
      return;
    }
    const errors = r.data.errors || [];
    if (!errors.length && files.errorsOffset === 0) emptyRow(tbody, 3, 'No invalid lines stored for this file.');
    tbody.append(...errors.map((e) => el('tr', { 'data-line': e.line },
      td('Line', { class: 'num' }, num(e.line)),
      td('Reason', {}, e.reason),
      td('Excerpt', { class: 'excerpt' }, e.excerpt === undefined || e.excerpt === null ? '' : String(e.excerpt)),
    )));
    files.errorsOffset += errors.length;
    $('errors-more').hidden = errors.length < page;
  }

  async function deleteFile(f) {
    const answer = await ask({
      title: 'Delete this LoaderFile?',
      text: location_(f) + ' (' + f.status + ') is forgotten with its invalid lines; the next load-from-bucket of its bucket imports it again. Rows already loaded stay.',
      ok: 'Delete',
      danger: true,
    });
    if (!answer.ok) return;
    const r = await api('DELETE', '/LoaderFile/' + encodeURIComponent(f.id));
    if (!auth) return;
    notice(r.ok ? r.message : 'Delete failed (' + r.status + '): ' + r.message, r.ok);
    if (files.errorsOf === f.id) closeErrors();
    refresh(true);
  }

  function closeErrors() {
    files.errorsOf = null;
    $('errors-panel').hidden = true;
    for (const row of document.querySelectorAll('#files-body tr.selected')) row.classList.remove('selected');
  }

  // ---- import -------------------------------------------------------------------------

  function importParams() {
    const params = { bucket: $('import-bucket').value.trim() };
    const glob = $('import-glob').value.trim();
    if (glob) params.glob = glob;
    const prefixes = $('import-prefixes').value.split(/[,\n]/).map((p) => p.trim()).filter(Boolean);
    if (prefixes.length) params.prefixes = prefixes;
    const threads = $('import-threads').value.trim();
    if (threads) params['thread-num'] = Number(threads);
    const inventory = $('import-inventory').value.trim();
    if (inventory) params.inventory = inventory;
    return params;
  }

  function checkImport(params) {
    const error = $('import-error');
    error.hidden = true;
    if (!/^s3:\/\/[^/]+/.test(params.bucket)) {
      error.textContent = 'Bucket: enter s3://name or s3://name/prefix/.';
      error.hidden = false;
      $('import-bucket').focus();
      return false;
    }
    if ('thread-num' in params && !(Number.isInteger(params['thread-num']) && params['thread-num'] >= 1)) {
      error.textContent = 'Thread-num: a whole number, at least 1.';
      error.hidden = false;
      $('import-threads').focus();
      return false;
    }
    return true;
  }

  function tallyRow(label, t, key) {
    t = t || {};
    return el('tr', { 'data-plan': key }, el('th', { scope: 'row' }, label), td('Files', { class: 'num' }, num(t.files)), td('Bytes', { class: 'num', title: num(t.bytes) + ' bytes' }, bytes(t.bytes)));
  }

  async function testImport() {
    const params = importParams();
    if (!checkImport(params)) return;
    params['dry-run'] = true;
    $('import-test').disabled = true;
    const r = await api('POST', '/rpc', { method: 'aidbox.bulk/load-from-bucket', params });
    $('import-test').disabled = false;
    if (!auth) return;
    if (!r.ok) {
      $('import-plan').hidden = true;
      const error = $('import-error');
      error.textContent = 'Test failed (' + r.status + '): ' + r.message;
      error.hidden = false;
      return;
    }
    const p = r.data.result || {};
    const types = Object.entries(p.types || {});
    $('plan-body').replaceChildren(
      el('div', { class: 'plan-totals' },
        stat('plan-files', 'Files', num(p.files)),
        stat('plan-bytes', 'Bytes', bytes(p.bytes), num(p.bytes) + ' bytes')),
      el('div', { class: 'scroll' }, el('table', {},
        el('caption', { class: 'sr-only' }, 'Files by what an import would do'),
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Compared with LoaderFiles'), el('th', { scope: 'col' }, 'Files'), el('th', { scope: 'col' }, 'Bytes'))),
        el('tbody', {},
          tallyRow('New (would load)', p.new, 'new'),
          tallyRow('Changed (new etag; not reloaded unless deleted)', p.changed, 'changed'),
          tallyRow('Unchanged (already known)', p.unchanged, 'unchanged'),
          tallyRow('Gone (LoaderFiles whose object is not listed)', p.gone, 'gone')))),
      el('h4', {}, 'By type'),
      el('div', { class: 'scroll' }, el('table', {},
        el('caption', { class: 'sr-only' }, 'Files by type'),
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Type'), el('th', { scope: 'col' }, 'Files'), el('th', { scope: 'col' }, 'Bytes'))),
        el('tbody', {}, types.length ? types.map(([ty, t]) => tallyRow(ty, t, 'type:' + ty)) : el('tr', { class: 'empty' }, el('td', { colspan: '3' }, 'No matching files.'))))),
    );
    $('import-plan').hidden = false;
  }

  async function startImport(event) {
    event.preventDefault();
    const params = importParams();
    if (!checkImport(params)) return;
    $('import-go').disabled = true;
    const r = await api('POST', '/rpc', { method: 'aidbox.bulk/load-from-bucket', params });
    $('import-go').disabled = false;
    if (!auth) return;
    if (!r.ok) {
      const error = $('import-error');
      error.textContent = 'Import failed (' + r.status + '): ' + r.message;
      error.hidden = false;
      return;
    }
    const res = r.data.result || {};
    if (res.session && res.session.id) {
      // An inventory import: a session plans it; follow that session.
      notice((res.message || 'Inventory import started') + ': session ' + res.session.id + '.');
      show('sessions', true);
      await openSession(res.session.id);
      return;
    }
    notice((res.message || 'Upload started') + ': ' + num(res.queued) + ' queued, ' + num(res.skipped) + ' skipped (already known).');
    const name = params.bucket.replace(/^s3:\/\//, '').split('/')[0];
    setFilters({ bucket: name });
    closeErrors();
    show('files', true);
  }

  // ---- $import sessions ---------------------------------------------------------------

  async function loadSessions() {
    const r = await api('GET', '/$import');
    if (!auth) return;
    const tbody = $('sessions-body');
    if (!r.ok) {
      emptyRow(tbody, 8, 'Sessions (' + r.status + '): ' + r.message);
    } else {
      const list = r.data.sessions || [];
      keepFocus(tbody, () => {
        if (!list.length) return emptyRow(tbody, 8, 'No $import sessions yet.');
        tbody.replaceChildren(...list.map((s) => el('tr', { 'data-id': s.id, 'data-status': s.status, class: sessions.open === s.id ? 'selected' : undefined },
          td('Session', { class: 'file' }, s.id, s.error ? el('span', { class: 'sub error' }, s.error) : null),
          td('Status', {}, badge(s.status)),
          td('Progress', {}, s.progress || ''),
          td('Loaded', { class: 'num' }, num(s.loaded)),
          td('Invalid', { class: 'num' }, num(s.failed)),
          td('Created', {}, when(s.created)),
          td('Updated', {}, when(s.updated)),
          td('Actions', {}, el('button', { type: 'button', class: 'small', 'data-key': 'open:' + s.id, on: { click: () => openSession(s.id) } }, 'Open')),
        )));
      });
    }
    if (sessions.open) await loadSession();
  }

  async function openSession(id) {
    sessions.open = id;
    say($('session-message'), '', true);
    $('session-detail').hidden = false;
    await loadSession();
    for (const row of document.querySelectorAll('#sessions-body tr')) row.classList.toggle('selected', row.dataset.id === id);
    const h = $('session-title');
    h.setAttribute('tabindex', '-1');
    h.focus();
  }

  async function loadSession() {
    const id = sessions.open;
    const r = await api('GET', '/$import/' + encodeURIComponent(id));
    if (!auth || sessions.open !== id) return;
    if (!r.ok) {
      $('session-summary').textContent = 'Session ' + id + ' (' + r.status + '): ' + r.message;
      $('inputs-body').replaceChildren();
      return;
    }
    renderSession(r.data);
  }

  function renderSession(s) {
    const loaded = (s.inputs || []).reduce((a, i) => a + (Number(i.loaded) || 0), 0);
    if (sessions.samplesOf !== s.id) {
      sessions.samplesOf = s.id;
      sessions.samples = [];
    }
    sample(sessions.samples, loaded);
    $('session-chart').replaceChildren(s.status === 'active' || sessions.samples.length > 1
      ? liveChart('session', 'Resources loaded per second by this session', sessions.samples)
      : '');
    $('session-title').textContent = 'Session ' + s.id;
    $('session-detail').dataset.status = s.status;
    $('session-summary').replaceChildren(badge(s.status), ' ', s.progress || '', el('span', { class: 'sub' }, 'created ' + time(s.created) + ' · updated ' + time(s.updated)));
    $('session-error').textContent = s.error ? 'Error: ' + s.error : '';
    const can = {
      pause: s.status === 'active',
      resume: s.status === 'paused',
      abort: s.status === 'active' || s.status === 'paused',
      'force-resume': s.status === 'active' || s.status === 'paused' || s.status === 'error',
    };
    for (const b of document.querySelectorAll('#session-actions button')) {
      b.setAttribute('aria-describedby', 'session-summary');
      b.title = can[b.dataset.action] ? '' : 'not from ' + s.status + ' (the server would answer 406)';
    }
    const tbody = $('inputs-body');
    const inputs = s.inputs || [];
    keepFocus(tbody, () => {
      if (!inputs.length && s.inventory) {
        // An S3 Inventory import: its files are LoaderFiles of the session, not inputs.
        return tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: '8' },
          'Files of the S3 Inventory ' + (s.inventory.manifest || '') + ': ',
          el('button', { type: 'button', class: 'small', 'data-key': 'inventory-files', on: { click: () => { setFilters({ import: s.id }); show('files', true); } } }, 'LoaderFiles of this session'))));
      }
      if (!inputs.length) return emptyRow(tbody, 8, 'No inputs.');
      tbody.replaceChildren(...inputs.map((i, n) => el('tr', { 'data-input': String(n), 'data-status': i.status },
        td('Type', {}, i.type || '(per line)'),
        td('URL', { class: 'url' }, breakable(i.url)),
        td('Status', {}, badge(i.status)),
        td('Line', { class: 'num' }, num(i.line)),
        td('Loaded', { class: 'num' }, num(i.loaded)),
        td('Invalid', { class: 'num' }, num(i.failed)),
        td('Notes', {},
          i.error ? el('span', { class: 'sub error' }, i.error) : null,
          i.stalledSince ? el('span', { class: 'sub' }, badge('stalled'), ' since ' + time(i.stalledSince)) : null),
        td('Actions', {}, i.loaderFile
          ? el('button', { type: 'button', class: 'small', 'data-key': 'file:' + i.loaderFile, on: { click: () => showSessionFile(s.id, i) } }, Number(i.failed) > 0 ? 'Invalid lines' : 'LoaderFile')
          : ''),
      )));
    });
  }

  function showSessionFile(sessionId, input) {
    setFilters({ import: sessionId });
    show('files', true);
    if (Number(input.failed) > 0 || input.error) {
      openErrors({ id: input.loaderFile, file: input.url, url: input.url, failed: input.failed, status: input.status, error: input.error });
    }
  }

  const ACTION_TEXT = {
    pause: 'Loading files stop at their next batch, keeping their checkpoint; queued ones wait.',
    resume: 'Paused files are queued again and continue from their checkpoints.',
    abort: 'Unfinished files stop for good. Rows already committed stay.',
    'force-resume': 'Unfinished and failed files are queued again from their checkpoints; a worker still holding one loses it.',
  };

  async function sessionAction(action) {
    const id = sessions.open;
    if (!id) return;
    const answer = await ask({
      title: action[0].toUpperCase() + action.slice(1).replace('-', ' ') + ' session ' + id + '?',
      text: ACTION_TEXT[action] + ' Enter the session secret (leave it empty if the session was started without one).',
      ok: action === 'force-resume' ? 'Force resume' : action[0].toUpperCase() + action.slice(1),
      secret: true,
      danger: action === 'abort',
    });
    if (!answer.ok) return;
    const resource = { id, action };
    if (answer.secret) resource.secret = answer.secret;
    const r = await api('POST', '/$import', { resource });
    if (!auth) return;
    if (r.ok) {
      say($('session-message'), 'Session ' + id + ': ' + action + ' done, now ' + (r.data && r.data.status) + '.', true);
      if (r.data && r.data.id) renderSession(r.data);
    } else {
      say($('session-message'), action + ' refused (' + r.status + '): ' + r.message, false);
    }
    refresh(true);
  }

  // ---- exports ------------------------------------------------------------------------

  async function loadExports() {
    const r = await api('GET', '/$export-status');
    if (!auth) return;
    const tbody = $('exports-body');
    if (!r.ok) {
      emptyRow(tbody, 7, 'Exports (' + r.status + '): ' + r.message);
      return;
    }
    const list = r.data.exports || [];
    keepFocus(tbody, () => {
      if (!list.length) return emptyRow(tbody, 7, 'No exports yet.');
      tbody.replaceChildren(...list.map(exportRow));
    });
    const open = list.find((x) => x.id === exportsState.open);
    if (open && open.status === 'active') await loadExport(open.id);
  }

  function exportRow(x) {
    const bar = el('progress', { max: String(Math.max(1, Number(x.tasks) || 0)), 'aria-label': 'Tasks done of export ' + x.id });
    bar.value = Number(x.tasksDone) || 0;
    const actions = [];
    if (x.status !== 'cancelled') {
      actions.push(el('button', { type: 'button', class: 'small', 'data-key': 'files:' + x.id, 'data-action': 'open', on: { click: () => openExport(x.id) } }, x.status === 'done' ? 'Files' : 'Status'));
    }
    if (x.status === 'active' || x.status === 'done') {
      actions.push(el('button', { type: 'button', class: 'small danger', 'data-key': 'cancel:' + x.id, 'data-action': 'cancel', on: { click: () => cancelExport(x) } }, x.status === 'done' ? 'Delete files' : 'Cancel'));
    }
    return el('tr', { 'data-id': x.id, 'data-status': x.status, class: exportsState.open === x.id ? 'selected' : undefined },
      td('Export', { class: 'file' }, x.id, el('span', { class: 'sub' }, [x.kind, x.request].filter(Boolean).join(' · ')),
        x.error ? el('span', { class: 'sub error' }, x.error) : null),
      td('Status', {}, badge(x.status)),
      td('Progress', { class: 'progress' }, bar, el('span', { class: 'sub' }, num(x.tasksDone) + ' / ' + num(x.tasks) + ' tasks · ' + num(x.files) + ' files')),
      td('Resources', { class: 'num' }, num(x.resources)),
      td('Owner', {}, x.owner || '—'),
      td('Created', {}, when(x.created)),
      td('Actions', {}, el('div', { class: 'actions' }, actions)),
    );
  }

  async function openExport(id) {
    exportsState.open = id;
    $('export-detail').hidden = false;
    $('export-title').textContent = 'Export ' + id;
    await loadExport(id);
    const h = $('export-title');
    h.setAttribute('tabindex', '-1');
    h.focus();
  }

  async function loadExport(id) {
    const r = await api('GET', '/$export-status/' + encodeURIComponent(id));
    if (!auth || exportsState.open !== id) return;
    const body = $('export-body');
    if (exportsState.samplesOf !== id) {
      exportsState.samplesOf = id;
      exportsState.samples = [];
    }
    if (r.status === 202) {
      const progress = r.headers.get('X-Progress') || 'in progress';
      const written = /([0-9]+) resources/.exec(progress);
      if (written) sample(exportsState.samples, written[1]);
      body.replaceChildren(el('p', {}, badge('active'), ' ', progress),
        liveChart('export', 'Resources written per second by this export', exportsState.samples));
    } else if (r.status === 429) {
      body.replaceChildren(el('p', { class: 'muted' }, 'Polled too soon; the next refresh asks again.'));
    } else if (!r.ok) {
      body.replaceChildren(el('p', { class: 'error' }, '(' + r.status + ') ' + r.message));
    } else {
      const m = r.data || {};
      const files = (m.output || []).map((o, n) => el('tr', { 'data-output': String(n) },
        td('Type', {}, o.type),
        td('Resources', { class: 'num' }, num(o.count)),
        td('File', { class: 'url' }, safeUrl(o.url)
          ? el('a', { href: o.url, rel: 'noopener noreferrer', target: '_blank', 'data-role': 'download' }, 'Download ' + fileName(o.url))
          : String(o.url || '')),
      ));
      const errors = (m.error || []).map((o) => el('li', {}, o.type + ': ', safeUrl(o.url) ? el('a', { href: o.url, rel: 'noopener noreferrer', target: '_blank' }, fileName(o.url)) : String(o.url || '')));
      const deleted = (m.deleted || []).map((o) => el('li', {}, o.type + ': ', safeUrl(o.url) ? el('a', { href: o.url, rel: 'noopener noreferrer', target: '_blank' }, fileName(o.url)) : String(o.url || '')));
      body.replaceChildren(
        el('p', {}, badge('done'), ' transaction time ' + time(m.transactionTime) + (r.headers.get('Expires') ? ' · links expire ' + r.headers.get('Expires') : '')),
        el('div', { class: 'scroll' }, el('table', { class: 'cards-on-phone' },
          el('caption', { class: 'sr-only' }, 'Files of the export'),
          el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Type'), el('th', { scope: 'col' }, 'Resources'), el('th', { scope: 'col' }, 'File'))),
          el('tbody', {}, files.length ? files : el('tr', { class: 'empty' }, el('td', { colspan: '3' }, 'No files (no rows matched).'))))),
        ...(errors.length ? [el('h4', {}, 'Errors'), el('ul', {}, errors)] : []),
        ...(deleted.length ? [el('h4', {}, 'Deleted'), el('ul', {}, deleted)] : []),
      );
    }
  }

  function fileName(url) {
    try {
      return decodeURIComponent(new URL(url).pathname.split('/').pop());
    } catch {
      return String(url);
    }
  }

  async function cancelExport(x) {
    const answer = await ask({
      title: (x.status === 'done' ? 'Delete the files of export ' : 'Cancel export ') + x.id + '?',
      text: x.status === 'done'
        ? 'Its files are deleted and its status answers 404 from now on.'
        : 'Its running tasks stop at their next part and delete their files; its status answers 404 from now on.',
      ok: x.status === 'done' ? 'Delete files' : 'Cancel export',
      cancel: 'Keep it',
      danger: true,
    });
    if (!answer.ok) return;
    const r = await api('DELETE', '/$export-status/' + encodeURIComponent(x.id));
    if (!auth) return;
    say($('export-message'), r.ok ? 'Export ' + x.id + ' cancelled (' + r.status + '): ' + r.message : 'Cancel refused (' + r.status + '): ' + r.message, r.ok);
    if (exportsState.open === x.id) {
      exportsState.open = null;
      $('export-detail').hidden = true;
    }
    refresh(true);
  }

  // ---- dead letters -------------------------------------------------------------------

  // Listing a dead-letter queue receives its messages (SQS has no peek): at most every
  // 10 s unless asked.
  let deadListed = 0;
  async function loadDead(force) {
    if (!force && Date.now() - deadListed < 10000) return;
    deadListed = Date.now();
    const r = await api('GET', '/$dead-letters');
    if (!auth) return;
    const tbody = $('dead-body');
    if (!r.ok) {
      emptyRow(tbody, 7, 'Dead letters (' + r.status + '): ' + r.message);
      return;
    }
    const list = r.data.messages || [];
    keepFocus(tbody, () => {
      if (!list.length) return emptyRow(tbody, 7, 'No dead letters.');
      tbody.replaceChildren(...list.map((m) => el('tr', { 'data-id': m.id },
        td('Queue', {}, m.queue),
        td('About', { class: 'file' }, m.file || m.task || '—', el('span', { class: 'sub' }, [m.loaderFile ? 'LoaderFile ' + m.loaderFile : null, 'message ' + m.id].filter(Boolean).join(' · '))),
        td('Status', {}, m.status ? badge(m.status) : '—'),
        td('Error', { class: 'excerpt', 'data-role': 'error' }, m.error || '—'),
        td('Receives', { class: 'num' }, num(m.receives)),
        td('Sent', {}, when(m.sent)),
        td('Actions', {}, el('button', { type: 'button', class: 'small', 'data-key': 'retry:' + m.id, 'data-action': 'retry', on: { click: () => retryDead(m) } }, 'Retry')),
      )));
    });
  }

  async function retryDead(m) {
    const r = await api('POST', '/$dead-letters/' + encodeURIComponent(m.id) + '/$retry');
    if (!auth) return;
    say($('dead-message'), r.ok ? r.message : 'Retry refused (' + r.status + '): ' + r.message, r.ok);
    refresh(true);
  }

  // ---- the dialog ---------------------------------------------------------------------

  function ask({ title, text, ok, cancel, secret, danger }) {
    return new Promise((resolve) => {
      const d = $('dialog');
      const input = $('dialog-secret');
      $('dialog-title').textContent = title;
      $('dialog-text').textContent = text;
      $('dialog-secret-row').hidden = !secret;
      input.value = '';
      $('dialog-ok').textContent = ok || 'OK';
      $('dialog-ok').className = danger ? 'danger' : 'primary';
      $('dialog-cancel').textContent = cancel || 'Cancel';
      const finish = (confirmed) => {
        const value = input.value;
        input.value = '';
        $('dialog-form').removeEventListener('submit', onSubmit);
        $('dialog-cancel').removeEventListener('click', onCancel);
        d.removeEventListener('cancel', onCancel);
        if (d.open) d.close();
        resolve({ ok: confirmed, secret: value });
      };
      const onSubmit = (e) => { e.preventDefault(); finish(true); };
      const onCancel = (e) => { e.preventDefault(); finish(false); };
      $('dialog-form').addEventListener('submit', onSubmit);
      $('dialog-cancel').addEventListener('click', onCancel);
      d.addEventListener('cancel', onCancel);
      d.showModal();
      (secret ? input : danger ? $('dialog-cancel') : $('dialog-ok')).focus();
    });
  }

  // ---- wiring -------------------------------------------------------------------------

  function start() {
    $('signin-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut(''));
    for (const b of document.querySelectorAll('#nav button')) {
      b.addEventListener('click', () => {
        $('notice').hidden = true;
        show(b.dataset.view, true);
      });
    }
    $('poll-every').addEventListener('change', (e) => {
      pollMs = Number(e.target.value) || 0;
      schedule();
    });
    $('files-filter').addEventListener('submit', (e) => {
      e.preventDefault();
      setFilters({
        status: $('filter-status').value,
        bucket: $('filter-bucket').value.trim(),
        type: $('filter-type').value.trim(),
        import: $('filter-import').value.trim(),
      });
      refresh(true);
    });
    $('filter-clear').addEventListener('click', () => { setFilters({}); refresh(true); });
    $('files-next').addEventListener('click', () => { files.count += 100; refresh(true); });
    $('errors-close').addEventListener('click', closeErrors);
    $('errors-next').addEventListener('click', moreErrors);
    $('import-test').addEventListener('click', testImport);
    $('import-form').addEventListener('submit', startImport);
    $('session-close').addEventListener('click', () => {
      sessions.open = null;
      $('session-detail').hidden = true;
      for (const row of document.querySelectorAll('#sessions-body tr.selected')) row.classList.remove('selected');
    });
    for (const b of document.querySelectorAll('#session-actions button')) {
      b.addEventListener('click', () => sessionAction(b.dataset.action));
    }
    $('export-close').addEventListener('click', () => {
      exportsState.open = null;
      $('export-detail').hidden = true;
    });
    signOut('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
