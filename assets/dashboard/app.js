// vigil dashboard: one WebSocket subscription (snapshot, then every event in seq order), a
// virtualised agents table, a chart of the status counts, an event log, an agent's details and
// the admin actions. No polling: the page follows the stream and resumes it from its last seq
// after a dropped connection. Everything an agent chose (ids, names, kinds, details) is written
// with textContent, never as HTML.
'use strict';

(() => {
  const STATUSES = ['online', 'degraded', 'offline', 'maintenance', 'unknown', 'left'];
  const RANK = { offline: 0, degraded: 1, unknown: 2, maintenance: 3, online: 4, left: 5 };
  const CHART = ['online', 'degraded', 'offline', 'maintenance', 'unknown'];
  const LOG_MAX = 300;
  const HISTORY_MAX = 600; // one sample a second: ten minutes
  const ROW_H = 28;

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };

  const state = {
    agents: new Map(),
    counts: Object.fromEntries(STATUSES.map((s) => [s, 0])),
    kinds: new Map(),
    lastSeq: 0,
    synced: false,
    connected: false,
    admin: false,
    adminChecked: false,
    gaps: 0,
    view: [],
    viewDirty: true,
    lastViewBuild: 0,
    sort: { key: 'id', dir: 1 },
    filter: { q: '', kind: '', status: '' },
    active: 0,
    selected: null,
    selectedEvents: [],
    history: [],
    serverStats: null,
    ref: 0,
    pending: new Map(),
    attempts: 0,
    ws: null,
    // What the page's work costs (read by the tests and the big-fleet measurement).
    timings: { snapshotParseMs: 0, snapshotApplyMs: 0, lastBuildMs: 0, maxBuildMs: 0, longTasks: 0, longestTaskMs: 0 },
  };
  window.vigilDashboard = state; // for tests and the curious

  // ---- token ---------------------------------------------------------------------------------
  function initialToken() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const query = new URLSearchParams(location.search);
    const t = hash.get('token') || query.get('token');
    if (t) {
      sessionStorage.setItem('vigil-token', t);
      // Out of the address bar and the history (it is kept for this tab only).
      query.delete('token');
      const rest = query.toString();
      history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : ''));
    }
    return sessionStorage.getItem('vigil-token') || '';
  }
  let token = initialToken();

  // ---- connection ----------------------------------------------------------------------------
  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let url = `${proto}//${location.host}/ws`;
    if (token) url += `?token=${encodeURIComponent(token)}`;
    clearTimeout(state.retryTimer);
    const ws = new WebSocket(url);
    state.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      state.refused = 0;
      state.attempts = 0;
      state.connected = true;
      subscribe();
      admin('stats', null).then(
        () => setAdmin(true),
        () => setAdmin(false),
      );
      showConn();
    };
    ws.onmessage = (m) => {
      if (state.ws !== ws) return; // a socket this page has replaced
      const t0 = performance.now();
      let f;
      try { f = JSON.parse(m.data); } catch (e) { return; }
      if (f.type === 'snapshot') state.timings.snapshotParseMs = performance.now() - t0;
      onFrame(f);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.connected = false;
      state.ws = null;
      for (const [, p] of state.pending) p.reject(new Error('disconnected'));
      state.pending.clear();
      const delay = Math.min(10000, 500 * 2 ** state.attempts) * (0.5 + Math.random() / 2);
      state.attempts += 1;
      // Refused at the upgrade (a wrong or missing token is an HTTP 401 there, which a page
      // cannot read): after two in a row, say that a token may be what is missing.
      if (!opened) state.refused = (state.refused || 0) + 1;
      state.retryAt = Date.now() + delay;
      showConn();
      state.retryTimer = setTimeout(connect, delay);
    };
  }

  // A fresh page (or one whose history is gone) asks for a snapshot; a page that has followed
  // the stream resumes after its last seq, so nothing is missed and nothing arrives twice.
  function subscribe(forceSnapshot) {
    // Until the server answers, frames of the subscription being replaced are ignored.
    state.awaitingAck = true;
    const sub = { type: 'subscribe', topics: ['agents', 'jobs', 'stats', 'alerts'], ref: 'sub' };
    if (state.synced && !forceSnapshot) sub.since = state.lastSeq;
    else sub.snapshot = true;
    send(sub);
  }

  function send(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
  }

  function admin(op, args) {
    return new Promise((resolve, reject) => {
      if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
        reject(new Error('not connected'));
        return;
      }
      const ref = `a${++state.ref}`;
      state.pending.set(ref, { resolve, reject });
      const frame = { type: 'admin', op, ref };
      if (args) frame.args = args;
      send(frame);
    });
  }

  function onFrame(f) {
    switch (f.type) {
      case 'ack':
        if (f.ref === 'sub') state.awaitingAck = false;
        return;
      case 'snapshot': state.awaitingAck = false; return onSnapshot(f);
      case 'event': if (!state.awaitingAck) onEvent(f); return;
      case 'stats': state.serverStats = f; return showServer();
      case 'lagged':
        // The server ended this subscription; resume right after the last event applied.
        return subscribe();
      case 'resync_required':
        state.synced = false;
        return subscribe(true);
      case 'result': {
        const p = state.pending.get(f.ref);
        if (p) { state.pending.delete(f.ref); p.resolve(f.data); }
        return;
      }
      case 'error': {
        if (f.ref === 'sub') {
          // The subscription was refused (e.g. `overloaded`): try again shortly rather than
          // sit on a page that says "Live" and follows nothing.
          toast(`Subscription refused (${f.code}); retrying`, true);
          setTimeout(() => subscribe(!state.synced), 1000);
          return;
        }
        const p = f.ref !== undefined && state.pending.get(f.ref);
        if (p) { state.pending.delete(f.ref); p.reject(new Error(`${f.code}: ${f.message}`)); return; }
        if (f.code === 'unauthorized') toast('The server wants a token: enter one above.', true);
        else toast(`${f.code}: ${f.message}`, true);
        return;
      }
      default: return;
    }
  }

  function onSnapshot(f) {
    const t0 = performance.now();
    state.snapshots = (state.snapshots || 0) + 1;
    state.agents.clear();
    for (const a of f.agents || []) state.agents.set(a.id, a);
    state.lastSeq = f.seq;
    state.synced = true;
    if (f.stats && f.stats.at) state.serverStats = f.stats;
    recount();
    state.viewDirty = true;
    if (state.selected) refreshDetail();
    render();
    state.timings.snapshotApplyMs = performance.now() - t0;
  }

  function onEvent(f) {
    if (f.seq <= state.lastSeq) return; // already applied (a resume overlaps nothing, but be safe)
    if (state.synced && f.seq !== state.lastSeq + 1) {
      // A hole: the stream guarantees none, so resume from what we have.
      state.gaps += 1;
      subscribe();
      return;
    }
    state.lastSeq = f.seq;
    apply(f);
    logEvent(f);
    if (state.selected && f.agent === state.selected) {
      state.selectedEvents.push(f);
      if (state.selectedEvents.length > 50) state.selectedEvents.shift();
      refreshDetail();
    }
    scheduleRender();
  }

  // The fields the table sorts or filters on: a change to one of them reorders the view only
  // when the view depends on it; otherwise the rows shown are simply drawn again.
  const VIEW_FIELDS = ['status', 'kind', 'name', 'activity', 'last_seen', 'connected', 'incarnation'];

  function apply(f) {
    if (!f.agent) return;
    let a = state.agents.get(f.agent);
    const isNew = !a;
    const old = a ? VIEW_FIELDS.map((k) => a[k]) : null;
    const before = a ? a.status : null;
    const beforeKind = a ? a.kind : null;
    switch (f.event) {
      case 'registered':
        if (!a) {
          a = { id: f.agent, registered_at: f.at, metrics: {}, metadata: {}, capabilities: [] };
          state.agents.set(f.agent, a);
        }
        Object.assign(a, {
          name: f.name, kind: f.kind, metadata: f.metadata || {}, capabilities: f.capabilities || [],
          incarnation: f.incarnation, status: f.status || 'online', connected: true, last_seen: f.at,
          updated_at: f.at,
        });
        break;
      case 'transition':
        if (!a) return;
        a.status = f.to;
        a.updated_at = f.at;
        if (f.reason === 'disconnected') a.connected = false;
        if (f.reason === 'heartbeat_recovered' || f.reason.startsWith('reported_')) a.last_seen = f.at;
        break;
      case 'activity':
        if (!a) return;
        a.activity = f.to;
        a.last_seen = f.at;
        break;
      case 'job': {
        if (!a) return;
        // Unfinished jobs, as the record keeps them.
        a.jobs = a.jobs || {};
        if (f.to === 'completed' || f.to === 'failed') delete a.jobs[f.job];
        else a.jobs[f.job] = { state: f.to, progress: f.progress };
        break;
      }
      case 'deregistered':
        if (!a) return;
        a.status = 'left';
        a.connected = false;
        a.updated_at = f.at;
        break;
      default:
        return;
    }
    if (before !== a.status) {
      if (before) state.counts[before] -= 1;
      state.counts[a.status] = (state.counts[a.status] || 0) + 1;
    }
    if (beforeKind !== a.kind) {
      if (beforeKind) bumpKind(beforeKind, -1);
      bumpKind(a.kind, 1);
    }
    const { sort, filter } = state;
    const reorders = (k) => sort.key === k || (k === 'status' && filter.status) || (k === 'kind' && filter.kind);
    if (isNew || VIEW_FIELDS.some((k, i) => old[i] !== a[k] && reorders(k))) state.viewDirty = true;
  }

  function bumpKind(kind, d) {
    const n = (state.kinds.get(kind) || 0) + d;
    if (n <= 0) state.kinds.delete(kind); else state.kinds.set(kind, n);
    state.kindsDirty = true;
  }

  function recount() {
    for (const s of STATUSES) state.counts[s] = 0;
    state.kinds.clear();
    for (const a of state.agents.values()) {
      state.counts[a.status] = (state.counts[a.status] || 0) + 1;
      state.kinds.set(a.kind, (state.kinds.get(a.kind) || 0) + 1);
    }
    state.kindsDirty = true;
  }

  // ---- rendering -----------------------------------------------------------------------------
  let frame = 0;
  function scheduleRender() {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
  }

  function render() {
    flushLog();
    for (const n of document.querySelectorAll('#counts .n[data-status]')) {
      n.textContent = (state.counts[n.dataset.status] || 0).toLocaleString();
    }
    $('total').textContent = state.agents.size.toLocaleString();
    $('seq').textContent = state.lastSeq;
    if (state.kindsDirty) renderKinds();
    // Sorting 100,000 agents takes tens of milliseconds: with a big fleet the table is rebuilt
    // at most four times a second, while the counts above follow every event.
    const now = performance.now();
    const spacing = state.agents.size > 20000 ? 250 : 0;
    if (state.viewDirty) {
      if (now - state.lastViewBuild >= spacing) buildView();
      else setTimeout(scheduleRender, spacing);
    }
    renderRows();
  }

  function renderKinds() {
    state.kindsDirty = false;
    const sel = $('kind');
    const keep = sel.value;
    const kinds = [...state.kinds.keys()].sort();
    while (sel.options.length > 1) sel.remove(1);
    for (const k of kinds) sel.add(new Option(`${k} (${state.kinds.get(k)})`, k));
    sel.value = kinds.includes(keep) ? keep : '';
  }

  function compare(key) {
    const dir = state.sort.dir;
    if (key === 'status') return (a, b) => dir * ((RANK[a.status] - RANK[b.status]) || cmp(a.id, b.id));
    if (key === 'incarnation') return (a, b) => dir * (((a.incarnation || 0) - (b.incarnation || 0)) || cmp(a.id, b.id));
    if (key === 'connected') return (a, b) => dir * ((Number(!!a.connected) - Number(!!b.connected)) || cmp(a.id, b.id));
    return (a, b) => dir * (cmp(a[key] || '', b[key] || '') || cmp(a.id, b.id));
  }
  const cmp = (x, y) => (x < y ? -1 : x > y ? 1 : 0);

  function buildView() {
    const t0 = performance.now();
    const { q, kind, status } = state.filter;
    const activeId = state.view[state.active] && state.view[state.active].id;
    const out = [];
    for (const a of state.agents.values()) {
      if (kind && a.kind !== kind) continue;
      if (status && a.status !== status) continue;
      if (q && !a.id.includes(q)) continue;
      out.push(a);
    }
    out.sort(compare(state.sort.key));
    const took = performance.now() - t0;
    state.timings.lastBuildMs = took;
    state.timings.maxBuildMs = Math.max(state.timings.maxBuildMs, took);
    state.view = out;
    state.viewDirty = false;
    state.lastViewBuild = performance.now();
    // Keep the keyboard's place on the same agent when it is still shown.
    if (activeId) {
      const i = out.findIndex((a) => a.id === activeId);
      state.active = i >= 0 ? i : Math.min(state.active, Math.max(0, out.length - 1));
    }
    $('spacer').style.height = `${out.length * ROW_H}px`;
    $('grid').setAttribute('aria-rowcount', String(out.length + 1));
    $('shown').textContent = `(${out.length.toLocaleString()} shown)`;
  }

  const rowPool = [];
  function renderRows() {
    const vp = $('viewport');
    const first = Math.max(0, Math.floor(vp.scrollTop / ROW_H) - 5);
    const last = Math.min(state.view.length, Math.ceil((vp.scrollTop + vp.clientHeight) / ROW_H) + 5);
    let used = 0;
    for (let i = first; i < last; i++, used++) {
      let row = rowPool[used];
      if (!row) {
        row = el('div', 'row');
        row.setAttribute('role', 'row');
        for (let c = 0; c < 8; c++) {
          const cell = el('div');
          cell.setAttribute('role', 'gridcell');
          row.appendChild(cell);
        }
        row.addEventListener('click', () => { setActive(Number(row.dataset.index)); openDetail(row.dataset.id); });
        rowPool.push(row);
        vp.appendChild(row);
      }
      fillRow(row, state.view[i], i);
    }
    for (let i = used; i < rowPool.length; i++) rowPool[i].hidden = true;
    const act = state.view[state.active];
    $('grid').setAttribute('aria-activedescendant', act ? `row-${state.active}` : '');
  }

  function fillRow(row, a, i) {
    row.hidden = false;
    row.id = `row-${i}`;
    row.dataset.index = i;
    row.dataset.id = a.id;
    row.setAttribute('aria-rowindex', String(i + 2));
    row.setAttribute('aria-selected', String(i === state.active));
    row.classList.toggle('active', i === state.active);
    row.style.top = `${i * ROW_H}px`;
    const c = row.children;
    c[0].textContent = a.id; c[0].title = a.id;
    c[1].textContent = a.name || '';
    c[2].textContent = a.kind || '';
    c[3].replaceChildren(badge(a.status));
    c[4].textContent = a.activity || '';
    c[5].textContent = shortTime(a.last_seen); c[5].title = a.last_seen || '';
    c[6].textContent = a.connected ? 'yes' : 'no';
    c[7].textContent = a.incarnation === undefined ? '' : a.incarnation;
  }

  function badge(status) {
    return el('span', `badge s-${status}`, status);
  }

  function shortTime(t) {
    if (!t) return '';
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? t : d.toLocaleTimeString();
  }

  function showConn() {
    const c = $('conn');
    if (state.connected) {
      c.textContent = 'Live';
      c.className = 'conn conn-live';
    } else {
      const secs = state.retryAt ? Math.max(0, Math.round((state.retryAt - Date.now()) / 1000)) : 0;
      c.textContent = state.synced
        ? `Disconnected: reconnecting in ${secs}s, will resume after seq ${state.lastSeq}`
        : state.refused >= 2
          ? 'The server refuses the connection: is a token needed? Enter one above.'
          : 'Connecting…';
      c.className = 'conn conn-down';
    }
  }

  function showServer() {
    const s = state.serverStats;
    if (!s) return;
    $('server-stats').textContent = `${s.connections ?? 0} connections · ${s.subscribers ?? 0} subscribers`;
    showChannels(s.sinks || []);
  }

  // The outbound channels (webhooks, logs) as the server's stats frames report them.
  function showChannels(sinks) {
    $('channels').hidden = sinks.length === 0;
    const rows = sinks.map((k) => {
      const tr = el('tr');
      tr.dataset.sink = k.name;
      tr.appendChild(el('td', '', k.name));
      tr.appendChild(el('td', '', k.type));
      const st = el('td');
      st.appendChild(el('span', `badge c-${k.state}`, k.state));
      tr.appendChild(st);
      tr.appendChild(el('td', '', k.delivered_seq));
      tr.appendChild(el('td', '', k.lag));
      tr.appendChild(el('td', '', k.consecutive_failures));
      tr.appendChild(el('td', '', k.dead_letters));
      const errCell = el('td', '', k.last_error && k.consecutive_failures ? k.last_error : '');
      tr.appendChild(errCell);
      const act = el('td');
      if (state.admin && k.dead_letters > 0) {
        const b = el('button', '', 'Replay dead letters');
        b.type = 'button';
        b.addEventListener('click', async () => {
          try {
            const r = await admin('replay', { sink: k.name });
            toast(`${k.name}: ${r.delivered} delivered, ${r.held} still held`);
          } catch (e) {
            toast(`Replay of ${k.name} failed: ${e.message}`, true);
          }
        });
        act.appendChild(b);
      }
      tr.appendChild(act);
      return tr;
    });
    $('channels-body').replaceChildren(...rows);
  }

  function setAdmin(on) {
    state.admin = on;
    state.adminChecked = true;
    $('role').textContent = on ? 'admin' : 'read-only';
    $('admin').hidden = !on;
  }

  // ---- the event log -------------------------------------------------------------------------
  function describe(f) {
    switch (f.event) {
      case 'registered': return `${f.agent} registered (${f.kind || '-'})`;
      case 'transition': return `${f.agent} ${f.from} → ${f.to} (${f.reason}${f.missed ? `, ${f.missed} missed` : ''})`;
      case 'activity': return `${f.agent} activity ${f.from || '-'} → ${f.to}`;
      case 'deregistered': return `${f.agent} left (${f.reason})`;
      case 'job': return `${f.agent || '-'} job ${f.job} ${f.from || '-'} → ${f.to}${f.error ? ` (${f.error})` : ''}`;
      case 'alert': return `alert ${f.severity} ${f.issue}${f.agent ? ` ${f.agent}` : ''}: ${f.detail || ''}`;
      default: return `${f.event}`;
    }
  }

  function logLine(f) {
    const li = el('li', f.event === 'alert' ? 'alert' : '');
    li.appendChild(el('span', 't', `#${f.seq} ${shortTime(f.at)}`));
    li.appendChild(document.createTextNode(describe(f)));
    return li;
  }

  function logEvent(f) {
    if (f.event === 'activity' || f.event === 'job') {
      if (state.agents.size > 1000) return; // keep the log for status changes in a big fleet
    }
    // Drawn once per frame (a burst of 100,000 offline events is one DOM change, not 100,000).
    pendingLog.push(f);
    if (pendingLog.length > LOG_MAX) pendingLog.splice(0, pendingLog.length - LOG_MAX);
    scheduleRender();
  }

  const pendingLog = [];
  function flushLog() {
    if (!pendingLog.length) return;
    const log = $('log');
    const lines = pendingLog.splice(0).reverse().map(logLine);
    log.prepend(...lines);
    while (log.childElementCount > LOG_MAX) log.lastElementChild.remove();
  }

  // ---- the chart -----------------------------------------------------------------------------
  function sample() {
    state.history.push({ t: Date.now(), c: { ...state.counts } });
    if (state.history.length > HISTORY_MAX) state.history.shift();
    drawChart();
    if (!state.connected) showConn();
  }

  function drawChart() {
    const cv = $('chart');
    const ratio = window.devicePixelRatio || 1;
    const w = cv.clientWidth || 720;
    const h = cv.clientHeight || 150;
    if (cv.width !== Math.round(w * ratio)) { cv.width = Math.round(w * ratio); cv.height = Math.round(h * ratio); }
    const g = cv.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const hist = state.history;
    if (hist.length < 2) return;
    let max = 1;
    for (const p of hist) for (const s of CHART) max = Math.max(max, p.c[s] || 0);
    // A logarithmic scale: ten degraded agents stay visible beside 100,000 online ones.
    const top = 10 ** Math.ceil(Math.log10(max + 1));
    const styles = getComputedStyle(document.documentElement);
    const pad = { l: 52, r: 8, t: 8, b: 18 };
    const x = (i) => pad.l + ((w - pad.l - pad.r) * i) / (HISTORY_MAX - 1);
    const y = (v) => h - pad.b - ((h - pad.t - pad.b) * Math.log10(1 + v)) / Math.log10(1 + top);
    g.font = '11px system-ui, sans-serif';
    g.lineWidth = 1;
    for (let v = 1; v <= top; v *= 10) {
      g.strokeStyle = '#eaeef2';
      g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(w - pad.r, y(v)); g.stroke();
      g.fillStyle = '#57606a';
      g.fillText(v.toLocaleString(), 4, y(v) + 4);
    }
    g.strokeStyle = '#d0d7de';
    g.beginPath(); g.moveTo(pad.l, y(0)); g.lineTo(w - pad.r, y(0)); g.stroke();
    g.fillText('0', 4, y(0) + 4);
    g.fillText('10 min ago', pad.l, h - 4);
    g.fillText('now', w - pad.r - 22, h - 4);
    const offset = HISTORY_MAX - hist.length;
    for (const s of CHART) {
      g.strokeStyle = styles.getPropertyValue(`--${s}`).trim();
      g.lineWidth = s === 'online' ? 2 : 1.5;
      g.beginPath();
      hist.forEach((p, i) => { const px = x(offset + i); const py = y(p.c[s] || 0); if (i) g.lineTo(px, py); else g.moveTo(px, py); });
      g.stroke();
    }
    const c = state.counts;
    cv.setAttribute('aria-label', `Agents by status, logarithmic scale. Now ${CHART.map((s) => `${c[s] || 0} ${s}`).join(', ')}; highest count in the window ${max}.`);
  }

  // ---- the table's keyboard and controls -----------------------------------------------------
  function setActive(i) {
    if (!state.view.length) return;
    state.active = Math.max(0, Math.min(state.view.length - 1, i));
    const vp = $('viewport');
    const top = state.active * ROW_H;
    if (top < vp.scrollTop) vp.scrollTop = top;
    else if (top + ROW_H > vp.scrollTop + vp.clientHeight) vp.scrollTop = top + ROW_H - vp.clientHeight;
    renderRows();
  }

  function onGridKey(e) {
    if (e.target !== e.currentTarget) return; // the column headers' buttons keep their keys
    const page = Math.max(1, Math.floor($('viewport').clientHeight / ROW_H) - 1);
    const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page };
    if (e.key in moves) setActive(state.active + moves[e.key]);
    else if (e.key === 'Home') setActive(0);
    else if (e.key === 'End') setActive(state.view.length - 1);
    else if (e.key === 'Enter' || e.key === ' ') {
      const a = state.view[state.active];
      if (a) openDetail(a.id);
    } else return;
    e.preventDefault();
  }

  function setSort(key) {
    if (state.sort.key === key) state.sort.dir = -state.sort.dir;
    else state.sort = { key, dir: 1 };
    for (const th of document.querySelectorAll('[role=columnheader]')) {
      const k = th.querySelector('button').dataset.key;
      th.setAttribute('aria-sort', k === key ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none');
    }
    state.viewDirty = true;
    state.lastViewBuild = 0;
    render();
  }

  function setFilter() {
    state.filter = { q: $('q').value.trim(), kind: $('kind').value, status: $('status').value };
    state.viewDirty = true;
    state.lastViewBuild = 0;
    state.active = 0;
    $('viewport').scrollTop = 0;
    render();
  }

  // ---- an agent's details --------------------------------------------------------------------
  function headers() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function openDetail(id) {
    state.selected = id;
    state.selectedEvents = [];
    const d = $('detail');
    d.hidden = false;
    d.dataset.agent = id;
    $('detail-title').textContent = id;
    refreshDetail();
    d.focus();
    const base = `/api/v1/agents/${encodeURIComponent(id)}`;
    try {
      const rec = await (await fetch(base, { headers: headers() })).json();
      if (state.selected !== id || rec.error) return;
      const known = state.agents.get(id);
      // The stream carries no heartbeats, so take metrics and last_seen from the record.
      if (known) Object.assign(known, { metrics: rec.metrics, last_seen: rec.last_seen, reported: rec.reported, jobs: rec.jobs });
      // Its newest events before the page's own (the page adds what follows live).
      const r = await fetch(`${base}/events?latest=true&limit=50`, { headers: headers() });
      const older = await r.json();
      if (!Array.isArray(older)) return;
      if (state.selected !== id) return;
      const seen = new Set(state.selectedEvents.map((e) => e.seq));
      state.selectedEvents = older.filter((e) => !seen.has(e.seq)).concat(state.selectedEvents).slice(-50);
      refreshDetail();
      scheduleRender();
    } catch (e) {
      toast(`Could not load ${id}: ${e.message}`, true);
    }
  }

  function refreshDetail() {
    const id = state.selected;
    const a = state.agents.get(id);
    const fields = $('detail-fields');
    fields.replaceChildren();
    const put = (dl, k, v) => { dl.appendChild(el('dt', '', k)); const dd = el('dd'); if (v instanceof Node) dd.appendChild(v); else dd.textContent = v; dl.appendChild(dd); };
    if (!a) { put(fields, 'status', 'not in this fleet'); return; }
    put(fields, 'status', badge(a.status));
    put(fields, 'name', a.name || '');
    put(fields, 'kind', a.kind || '');
    put(fields, 'activity', a.activity || '');
    put(fields, 'reported', a.reported || '');
    put(fields, 'connected', a.connected ? 'yes' : 'no');
    put(fields, 'incarnation', a.incarnation ?? '');
    put(fields, 'last seen', a.last_seen || '');
    put(fields, 'registered', a.registered_at || '');
    put(fields, 'updated', a.updated_at || '');
    put(fields, 'capabilities', (a.capabilities || []).join(', '));
    for (const [k, v] of Object.entries(a.metadata || {})) put(fields, `meta: ${k}`, typeof v === 'string' ? v : JSON.stringify(v));
    const jobs = Object.entries(a.jobs || {});
    if (jobs.length) put(fields, 'jobs', jobs.map(([j, s]) => `${j} ${s.state}${s.progress !== undefined ? ` ${Math.round(s.progress * 100)}%` : ''}`).join('; '));
    const m = $('detail-metrics');
    m.replaceChildren();
    const metrics = Object.entries(a.metrics || {});
    if (!metrics.length) put(m, 'none', 'reported');
    for (const [k, v] of metrics) put(m, k, typeof v === 'number' ? v.toLocaleString() : JSON.stringify(v));
    const ev = $('detail-events');
    ev.replaceChildren(...state.selectedEvents.slice().reverse().map(logLine));
  }

  function closeDetail() {
    state.selected = null;
    $('detail').hidden = true;
    $('grid').focus();
  }

  async function act(op, args, what) {
    try {
      const r = await admin(op, args);
      toast(r && r.changed === false ? `${what}: no change (${r.status})` : `${what}: done${r && r.status ? ` (now ${r.status})` : ''}`);
    } catch (e) {
      toast(`${what} failed: ${e.message}`, true);
    }
  }

  let toastTimer = 0;
  function toast(text, error) {
    const t = $('toast');
    t.textContent = text;
    t.className = `toast show${error ? ' error' : ''}`;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.className = 'toast'; }, 4000);
  }

  // ---- wiring --------------------------------------------------------------------------------
  function start() {
    $('token').value = token;
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      token = $('token').value.trim();
      sessionStorage.setItem('vigil-token', token);
      state.synced = false;
      state.refused = 0;
      if (state.ws) state.ws.close();
      else connect();
    });
    for (const b of document.querySelectorAll('[role=columnheader] button')) {
      b.addEventListener('click', () => setSort(b.dataset.key));
    }
    // Typing rebuilds the view after a pause, not on every key (a rebuild of 100,000 agents
    // takes milliseconds to tens of them).
    let typing = 0;
    $('q').addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(setFilter, state.agents.size > 20000 ? 150 : 0);
    });
    $('kind').addEventListener('change', setFilter);
    $('status').addEventListener('change', setFilter);
    $('grid').addEventListener('keydown', onGridKey);
    $('viewport').addEventListener('scroll', () => renderRows(), { passive: true });
    $('detail-close').addEventListener('click', closeDetail);
    $('detail').addEventListener('keydown', (e) => { if (e.key === 'Escape') closeDetail(); });
    const id = () => state.selected;
    $('act-maint-on').addEventListener('click', () => act('maintenance', { id: id(), on: true }, 'Maintenance on'));
    $('act-maint-off').addEventListener('click', () => act('maintenance', { id: id(), on: false }, 'Maintenance off'));
    $('act-set').addEventListener('click', () => {
      const status = $('act-status').value;
      act('set_status', { id: id(), status, reason: 'dashboard' }, `Set ${status}`);
    });
    $('act-evict').addEventListener('click', () => {
      if (window.confirm(`Evict ${id()}? It leaves the fleet until it registers again.`)) act('evict', { id: id(), reason: 'dashboard' }, 'Evict');
    });
    window.addEventListener('resize', () => { drawChart(); renderRows(); });
    setInterval(sample, 1000);
    if (window.PerformanceObserver && PerformanceObserver.supportedEntryTypes.includes('longtask')) {
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) {
          state.timings.longTasks += 1;
          state.timings.longestTaskMs = Math.max(state.timings.longestTaskMs, e.duration);
        }
      }).observe({ type: 'longtask' });
    }
    connect();
    render();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
