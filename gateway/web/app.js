// claude-lb dashboard: polls the admin API every 2 s and redraws. No framework, no build step.
// Everything shown comes from /api/accounts, /api/stats and /api/history; text from the API is
// only ever set with textContent (model ids and client names are chosen by callers).
'use strict';

(function () {
  const API = new URL('../api/', location.href);
  const KEY_NAME = 'claude-lb-admin-key';
  const POLL_MS = 2000;
  const BUCKET_MS = 10000;
  const WINDOW_MS = 10 * 60 * 1000;
  const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

  const $ = (id) => document.getElementById(id);

  const st = {
    key: sessionStorage.getItem(KEY_NAME) || '',
    paused: false,
    timer: 0,
    inflight: false,
    skew: 0, // server clock minus ours, ms
    accounts: null,
    stats: null,
    history: null,
    filters: { model: '', account: '', status: '', limit: 50, offset: 0 },
    buckets: new Map(), // bucket start ms -> Map(account -> count)
    lastCounts: null, // Map(account -> requests) at the last poll
    seeded: false,
    colors: new Map(),
    modelOptions: '',
    accountOptions: '',
    lastOK: 0,
    waitingForKey: false,
  };

  // ---- small DOM helpers ------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  // td wraps a cell's content in one element, so a stacked (phone) row shows "label  value".
  function td(label, ...children) {
    return el('td', { 'data-label': label }, el('div', { class: 'v' }, ...children));
  }

  const nf = new Intl.NumberFormat();
  function num(n) { return nf.format(n || 0); }
  function compact(n) {
    n = n || 0;
    if (n < 10000) return nf.format(n);
    const units = [['B', 1e9], ['M', 1e6], ['k', 1e3]];
    for (const [u, d] of units) if (n >= d) return (n / d).toFixed(n >= 10 * d ? 0 : 1) + u;
    return String(n);
  }
  function pct(x) { return (x * 100).toFixed(x === 1 || x === 0 ? 0 : 1) + '%'; }

  function serverNow() { return Date.now() + st.skew; }

  function ago(iso) {
    if (!iso) return 'never';
    const s = Math.max(0, Math.round((serverNow() - Date.parse(iso)) / 1000));
    if (s < 5) return 'just now';
    return dur(s) + ' ago';
  }

  function dur(s) {
    s = Math.max(0, Math.ceil(s));
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + String(s % 60).padStart(2, '0') + 's';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + String(m % 60).padStart(2, '0') + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    const today = new Date();
    const t = d.toLocaleTimeString([], { hour12: false });
    return d.toDateString() === today.toDateString() ? t : d.toLocaleDateString() + ' ' + t;
  }

  function colorOf(name) {
    if (!st.colors.has(name)) st.colors.set(name, PALETTE[st.colors.size % PALETTE.length]);
    return st.colors.get(name);
  }

  // ---- API ----------------------------------------------------------------------------------

  class APIError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, init) {
    const headers = { Accept: 'application/json' };
    if (st.key) headers.Authorization = 'Bearer ' + st.key;
    let res;
    try {
      res = await fetch(new URL(path, API), Object.assign({ cache: 'no-store', headers }, init || {}));
    } catch (e) {
      throw new APIError(0, 'cannot reach the gateway (' + e.message + ')');
    }
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const msg = body && body.error && body.error.message ? body.error.message : res.status + ' ' + res.statusText;
      throw new APIError(res.status, msg);
    }
    return body;
  }

  function historyPath() {
    const f = st.filters;
    const q = new URLSearchParams({ limit: String(f.limit), offset: String(f.offset) });
    if (f.model) q.set('model', f.model);
    if (f.account) q.set('account', f.account);
    if (f.status) q.set('status', f.status);
    return 'history?' + q.toString();
  }

  async function poll() {
    if (st.inflight || st.waitingForKey) return;
    st.inflight = true;
    try {
      const [accounts, stats, history] = await Promise.all([api('accounts'), api('stats'), api(historyPath())]);
      st.skew = Date.parse(accounts.now) - Date.now();
      st.accounts = accounts;
      st.stats = stats;
      st.history = history;
      if (!st.seeded) await seedPlot();
      sample(accounts);
      st.lastOK = Date.now();
      banner('');
      render();
    } catch (e) {
      if (e.status === 401) {
        askKey(st.key ? 'That key was refused: ' + e.message : '');
      } else if (e.status === 403) {
        banner('Access refused: ' + e.message);
      } else {
        banner((e.status ? 'Admin API error ' + e.status + ': ' : '') + e.message + ' — retrying…');
      }
    } finally {
      st.inflight = false;
    }
  }

  function schedule() {
    clearTimeout(st.timer);
    if (st.paused || document.hidden) return;
    st.timer = setTimeout(async () => { await poll(); schedule(); }, POLL_MS);
  }

  function refreshNow() {
    clearTimeout(st.timer);
    poll().then(schedule);
  }

  // ---- admin key ----------------------------------------------------------------------------

  function askKey(err) {
    st.waitingForKey = true;
    const dlg = $('keydialog');
    $('keyerror').textContent = err || '';
    $('keyerror').hidden = !err;
    $('keyinput').value = '';
    banner('The admin API needs the admin key.');
    if (!dlg.open) {
      if (typeof dlg.showModal === 'function') dlg.showModal();
      else dlg.setAttribute('open', '');
    }
    $('keyinput').focus();
  }

  function onKeySubmit(ev) {
    ev.preventDefault();
    const v = $('keyinput').value.trim();
    if (!v) return;
    st.key = v;
    sessionStorage.setItem(KEY_NAME, v);
    $('keydialog').close();
    st.waitingForKey = false;
    $('forget').hidden = false;
    refreshNow();
  }

  // ---- plot data ----------------------------------------------------------------------------

  function bucketOf(t) { return Math.floor(t / BUCKET_MS) * BUCKET_MS; }

  function addToBucket(t, account, n) {
    if (!account || n <= 0) return;
    const b = bucketOf(t);
    if (!st.buckets.has(b)) st.buckets.set(b, new Map());
    const m = st.buckets.get(b);
    m.set(account, (m.get(account) || 0) + n);
  }

  // seedPlot fills the plot's past from the history once, so it is not empty on first load.
  async function seedPlot() {
    st.seeded = true;
    try {
      const h = await api('history?limit=1000');
      const from = serverNow() - WINDOW_MS;
      for (const e of h.entries) {
        const t = Date.parse(e.time);
        if (t < from) continue;
        // Each attempt was a pick of an account, which is what the counters count.
        if (e.tried && e.tried.length) {
          for (const a of e.tried) {
            const i = a.lastIndexOf(':');
            addToBucket(t, i > 0 ? a.slice(0, i) : a, 1);
          }
        } else if (e.account) addToBucket(t, e.account, 1);
      }
    } catch (_) { /* the plot then starts empty */ }
  }

  // sample adds what each account's request counter grew by since the last poll.
  function sample(accounts) {
    const now = Date.parse(accounts.now);
    const counts = new Map();
    for (const a of accounts.accounts) counts.set(a.name, a.requests || 0);
    if (st.lastCounts) {
      for (const [name, n] of counts) {
        const before = st.lastCounts.get(name);
        if (before !== undefined && n > before) addToBucket(now, name, n - before);
      }
    }
    st.lastCounts = counts;
    const oldest = bucketOf(now - WINDOW_MS);
    for (const b of st.buckets.keys()) if (b < oldest) st.buckets.delete(b);
  }

  // ---- rendering ----------------------------------------------------------------------------

  function banner(msg) {
    const b = $('banner');
    b.textContent = msg;
    b.hidden = !msg;
  }

  function render() {
    renderHeader();
    renderSummary();
    renderAccounts();
    renderModels();
    renderFilters();
    renderHistory();
    renderPlot();
  }

  function renderHeader() {
    const a = st.accounts;
    $('replica').textContent = a.replica ? 'replica ' + a.replica : '';
    const store = $('store');
    store.textContent = a.degraded ? 'store degraded' : 'store ok';
    store.className = 'badge ' + (a.degraded ? 'bad' : 'good');
    store.title = a.degraded ? 'the shared store is unreachable; this replica serves from local state' : 'store reachable';
    const c = a.config || {};
    $('confighash').textContent = c.hash ? 'config ' + c.hash.slice(0, 12) : '';
    $('confighash').title = (c.path || '') + (c.loaded_at ? ' loaded ' + new Date(c.loaded_at).toLocaleString() : '');
    tickUpdated();
  }

  function tickUpdated() {
    if (!st.lastOK) return;
    const s = Math.round((Date.now() - st.lastOK) / 1000);
    $('updated').textContent = st.paused ? 'paused' : s < 2 ? 'live' : 'updated ' + s + 's ago';
  }

  function renderSummary() {
    const s = st.stats;
    const t = s.totals;
    $('sum-requests').textContent = compact(t.requests);
    $('sum-errors').textContent = num(t.errors) + ' errors';
    $('sum-tokens').textContent = compact(t.input_tokens + t.output_tokens + t.cache_read_tokens + t.cache_creation_tokens);
    $('sum-tokens-sub').textContent = compact(t.input_tokens) + ' in · ' + compact(t.output_tokens) + ' out · ' +
      compact(t.cache_read_tokens) + ' cache read · ' + compact(t.cache_creation_tokens) + ' cache write';
    const accs = st.accounts.accounts;
    const ok = accs.filter((a) => a.status === 'ok' || a.status === 'near-limit').length;
    $('sum-accounts').textContent = ok + ' / ' + accs.length;
    const cooling = accs.filter((a) => a.status === 'cooling').length;
    const bad = accs.length - ok - cooling;
    $('sum-accounts-sub').textContent = 'available · ' + cooling + ' cooling' + (bad ? ' · ' + bad + ' unusable' : '');
    const o = s.opus;
    const n = o.success + o.failure;
    $('opus-rate').textContent = n ? pct(o.success_rate) : '–';
    $('opus-sub').textContent = num(o.success) + ' ok · ' + num(o.failure) + ' failed (recent) · ' + num(o.requests) + ' total';
  }

  function statusBadge(status) {
    const cls = { ok: 'good', 'near-limit': 'warn', cooling: 'warn', disabled: 'muted' }[status] || 'bad';
    return el('span', { class: 'badge ' + cls, text: status });
  }

  function credCell(a) {
    const good = a.token_state === 'valid';
    const icon = good ? '✅' : a.token_state === 'refreshing' ? '🔄' : '❌';
    const label = { valid: 'Valid', invalid: 'Invalid', 'needs-login': 'Needs login', expired: 'Expired', refreshing: 'Refreshing' }[a.token_state] || a.token_state;
    return [
      el('span', { class: 'cred ' + (good ? 'good' : 'bad') }, icon + ' ' + label),
      el('div', { class: 'muted small nowrap' }, a.credential + ' ', el('code', { class: 'fp' }, a.fingerprint || '')),
    ];
  }

  function cooldownCell(a) {
    if (!a.cooldowns || a.cooldowns.length === 0) return ['—'];
    return a.cooldowns.map((c) => el('div', { class: 'cd ' + (c.soft ? 'soft' : 'hard') },
      el('span', { class: 'scope' }, c.soft ? 'near limit' : c.scope === 'account' ? '🧊 all models' : '🧊 ' + c.scope.replace(/^family:/, '')),
      ' ', el('span', { class: 'reason', title: c.reason }, c.reason || ''),
      ' ', el('span', { class: 'left', 'data-until': c.until }, dur((Date.parse(c.until) - serverNow()) / 1000) + ' left')));
  }

  function modelsCell(a) {
    const list = el('div', { class: 'globs' });
    for (const g of a.models) {
      const opus = /opus/.test(g);
      list.append(el('span', { class: 'glob' + (opus ? ' opus' : '') }, (opus ? '🎯 ' : '') + g));
    }
    return [el('span', { class: 'small muted' }, a.models.length + ' supported'), list];
  }

  function renderAccounts() {
    const rows = st.accounts.accounts.map((a) => {
      const tr = el('tr', { 'data-account': a.name, class: 'st-' + a.status },
        td('Account', el('strong', { class: 'name' }, a.name), a.opus_capable ? el('span', { class: 'opus-mark', title: 'Opus-capable' }, ' 🎯') : null,
          a.disabled ? el('span', { class: 'badge muted' }, 'disabled') : null),
        td('Status', statusBadge(a.status)),
        td('Plan', el('span', { class: 'plan' }, (a.plan || '').toUpperCase()), a.opus_capable ? el('div', { class: 'small muted' }, 'Opus enabled') : null),
        td('Models', ...modelsCell(a)),
        td('Requests', el('span', { class: 'num' }, num(a.requests)), a.errors ? el('div', { class: 'small bad-text' }, num(a.errors) + ' errors') : null),
        td('Tokens', el('span', { class: 'nowrap', title: num(a.cache_read_tokens) + ' cache read · ' + num(a.cache_creation_tokens) + ' cache write' },
          compact(a.input_tokens) + ' / ' + compact(a.output_tokens))),
        td('Last used', el('span', { class: 'ago', 'data-time': a.last_used || '', title: a.last_used ? new Date(a.last_used).toLocaleString() : '' }, ago(a.last_used))),
        td('Cooldown', ...cooldownCell(a)),
        td('Credential', ...credCell(a)));
      return tr;
    });
    $('accounts').tBodies[0].replaceChildren(...rows);
  }

  function renderModels() {
    const s = st.stats;
    const rows = s.models.map((m) => {
      const r = m.recent;
      const n = r.success + r.failure;
      const bar = el('div', { class: 'bar', title: n ? pct(r.success_rate) + ' of ' + n + ' recent' : 'no recent requests' });
      const fill = el('div', { class: 'fill' });
      fill.style.width = (n ? r.success_rate * 100 : 0) + '%';
      bar.append(fill);
      const opus = /opus/.test(m.model);
      return el('tr', { 'data-model': m.model },
        td('Model', (opus ? '🎯 ' : '') + (m.model || '(no model)')),
        td('Requests', el('span', { class: 'num' }, num(m.requests))),
        td('Recent ok', el('span', { class: 'num' }, num(r.success))),
        td('Recent failed', el('span', { class: 'num' + (r.failure ? ' bad-text' : '') }, num(r.failure))),
        td('Success', bar));
    });
    $('models').tBodies[0].replaceChildren(...rows);
    $('window-note').textContent = 'Requests count since the last reset; ok/failed count the ' + num(s.window) + ' most recent requests in the history.';
  }

  function setOptions(select, values, allLabel) {
    const cur = select.value;
    const opts = [el('option', { value: '' }, allLabel)];
    for (const v of values) opts.push(el('option', { value: v }, v || '(no model)'));
    select.replaceChildren(...opts);
    select.value = values.includes(cur) ? cur : '';
  }

  function renderFilters() {
    const models = st.stats.models.map((m) => m.model).filter((m) => m).sort();
    if (st.filters.model && !models.includes(st.filters.model)) models.push(st.filters.model);
    const mk = models.join('\n');
    if (mk !== st.modelOptions && document.activeElement !== $('f-model')) {
      st.modelOptions = mk;
      setOptions($('f-model'), models, 'all models');
      $('f-model').value = st.filters.model;
    }
    const accounts = st.accounts.accounts.map((a) => a.name);
    const ak = accounts.join('\n');
    if (ak !== st.accountOptions && document.activeElement !== $('f-account')) {
      st.accountOptions = ak;
      setOptions($('f-account'), accounts, 'all accounts');
      $('f-account').value = st.filters.account;
    }
  }

  function statusClass(code, err) {
    if (code >= 200 && code < 300 && !err) return 'good';
    if (code === 429 || code === 529) return 'warn';
    return 'bad';
  }

  function renderHistory() {
    const h = st.history;
    const rows = h.entries.map((e) => {
      const tried = (e.tried || []).join(' → ');
      const tok = el('span', {
        class: 'nowrap',
        title: num(e.cache_read_tokens) + ' cache read · ' + num(e.cache_creation_tokens) + ' cache write',
      }, compact(e.input_tokens) + ' / ' + compact(e.output_tokens));
      return el('tr', { 'data-model': e.model || '', 'data-account': e.account || '', 'data-request-id': e.request_id || '' },
        td('Time', el('span', { title: new Date(e.time).toLocaleString() }, fmtTime(e.time))),
        td('Client', e.client || '—'),
        td('Model', (/opus/.test(e.model || '') ? '🎯 ' : '') + (e.model || '—') + (e.stream ? ' ⇶' : '')),
        td('Account', e.account || '—'),
        td('Attempts', el('span', { class: 'num', title: tried }, String(e.attempts))),
        td('Status', el('span', { class: 'badge ' + statusClass(e.status, e.error), title: e.error || '' }, String(e.status))),
        td('Latency', el('span', { class: 'num' }, e.latency_ms >= 1000 ? (e.latency_ms / 1000).toFixed(2) + ' s' : Math.round(e.latency_ms) + ' ms')),
        td('Tokens', tok),
        td('Replica', e.replica || '—'));
    });
    $('history').tBodies[0].replaceChildren(...rows);
    const f = st.filters;
    const filtered = f.model || f.account || f.status || f.offset;
    $('history-empty').textContent = filtered ? 'No requests match these filters.' : 'No requests yet.';
    $('history-empty').hidden = rows.length > 0;
    $('newer').disabled = f.offset === 0;
    $('older').disabled = !h.more;
    $('page').textContent = rows.length ? (f.offset + 1) + '–' + (f.offset + rows.length) : '';
  }

  // renderPlot draws requests (picks) per account per 10 s bucket as stacked bars.
  function renderPlot() {
    const W = 600, H = 170, L = 34, R = 6, T = 8, B = 20;
    const now = serverNow();
    const end = bucketOf(now);
    const n = WINDOW_MS / BUCKET_MS;
    const names = st.accounts.accounts.map((a) => a.name);
    const totals = new Map(names.map((name) => [name, 0]));
    let maxY = 1;
    const buckets = [];
    for (let i = n - 1; i >= 0; i--) {
      const b = end - i * BUCKET_MS;
      const m = st.buckets.get(b) || new Map();
      let sum = 0;
      for (const name of names) {
        const v = m.get(name) || 0;
        sum += v;
        totals.set(name, totals.get(name) + v);
      }
      if (sum > maxY) maxY = sum;
      buckets.push({ start: b, m });
    }
    maxY = niceMax(maxY);
    const slot = (W - L - R) / n;
    const y = (v) => T + (1 - v / maxY) * (H - T - B);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'requests per account per 10 seconds', class: 'chart' });
    for (const f of [0, 0.5, 1]) {
      const v = maxY * f;
      const yy = y(v);
      root.append(svg('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: 'gridline' }));
      if (!Number.isInteger(v)) continue;
      const t = svg('text', { x: L - 4, y: yy + 4, 'text-anchor': 'end', class: 'axis' });
      t.textContent = String(v);
      root.append(t);
    }
    for (const [i, label, anchor] of [[0, '−10m', 'start'], [n / 2, '−5m', 'middle'], [n, 'now', 'end']]) {
      const t = svg('text', { x: L + i * slot, y: H - 4, 'text-anchor': anchor, class: 'axis' });
      t.textContent = label;
      root.append(t);
    }
    buckets.forEach((bk, i) => {
      let acc = 0;
      for (const name of names) {
        const v = bk.m.get(name) || 0;
        if (!v) continue;
        const top = y(acc + v);
        const r = svg('rect', {
          x: (L + i * slot + 0.5).toFixed(1), width: Math.max(1, slot - 1).toFixed(1),
          y: top.toFixed(1), height: Math.max(0.5, y(acc) - top).toFixed(1),
          fill: colorOf(name), 'data-account': name,
        });
        const title = svg('title');
        title.textContent = name + ': ' + v + ' at ' + new Date(bk.start).toLocaleTimeString([], { hour12: false });
        r.append(title);
        root.append(r);
        acc += v;
      }
    });
    $('plot').replaceChildren(root);
    const legend = names.map((name) => {
      const sw = svg('svg', { width: 12, height: 12, class: 'swatch', 'aria-hidden': 'true' });
      sw.append(svg('rect', { width: 12, height: 12, rx: 2, fill: colorOf(name) }));
      return el('span', { class: 'item' }, sw, ' ' + name + ' ', el('span', { class: 'muted' }, String(totals.get(name))));
    });
    $('legend').replaceChildren(...legend);
  }

  function niceMax(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // tick updates the countdowns and "ago" labels between polls.
  function tick() {
    for (const e of document.querySelectorAll('.left[data-until]')) {
      const s = (Date.parse(e.getAttribute('data-until')) - serverNow()) / 1000;
      e.textContent = s > 0 ? dur(s) + ' left' : 'ending';
    }
    for (const e of document.querySelectorAll('.ago[data-time]')) {
      const t = e.getAttribute('data-time');
      e.textContent = ago(t);
    }
    tickUpdated();
  }

  // ---- wiring -------------------------------------------------------------------------------

  function onFilter() {
    st.filters.model = $('f-model').value;
    st.filters.account = $('f-account').value;
    st.filters.status = $('f-status').value;
    st.filters.limit = Number($('f-limit').value) || 50;
    st.filters.offset = 0;
    refreshNow();
  }

  function init() {
    for (const id of ['f-model', 'f-account', 'f-status', 'f-limit']) $(id).addEventListener('change', onFilter);
    $('filters').addEventListener('submit', (e) => e.preventDefault());
    $('newer').addEventListener('click', () => {
      st.filters.offset = Math.max(0, st.filters.offset - st.filters.limit);
      refreshNow();
    });
    $('older').addEventListener('click', () => {
      st.filters.offset += st.filters.limit;
      refreshNow();
    });
    $('pause').addEventListener('click', () => {
      st.paused = !st.paused;
      $('pause').textContent = st.paused ? 'Resume' : 'Pause';
      $('pause').setAttribute('aria-pressed', String(st.paused));
      if (st.paused) { clearTimeout(st.timer); tickUpdated(); } else refreshNow();
    });
    $('forget').hidden = !st.key;
    $('forget').addEventListener('click', () => {
      sessionStorage.removeItem(KEY_NAME);
      st.key = '';
      $('forget').hidden = true;
      refreshNow();
    });
    $('keyform').addEventListener('submit', onKeySubmit);
    $('keydialog').addEventListener('cancel', (e) => e.preventDefault());
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshNow(); });
    setInterval(tick, 1000);
    refreshNow();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
