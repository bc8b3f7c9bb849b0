// ralphd's web page: reads /api/status and /api/cycles, then follows
// /api/events (Server-Sent Events) and redraws what changed. Everything the
// agent wrote is untrusted: it only ever reaches the page as text nodes
// (textContent, createTextNode), never as HTML.
'use strict';

const PHASES = ['scan', 'idea', 'code-edit', 'backtest', 'report'];
const ACTIVITY_MAX = 200;
const CHART_CYCLES = 60;
const OUTCOMES = {
  committed: { words: 'committed', tone: 'ok' },
  complete: { words: 'complete', tone: 'info' },
  rolled_back: { words: 'rolled back', tone: 'warn' },
  no_changes: { words: 'no changes', tone: '' },
  failed: { words: 'failed', tone: 'bad' },
  interrupted: { words: 'interrupted', tone: '' },
};
/** Why the loop waits, in words (the `reason` of a `waiting` event). */
const WAITS = {
  limiter: 'rate limiter',
  usage_limit: 'usage limit',
  breaker: 'circuit breaker open',
  backoff: 'retry backoff',
  sleep: 'sleep between cycles',
  paused: 'paused',
};
const LAST_ID_KEY = 'ralphd.lastEventId';
/** How many past events a newly opened page replays to fill its activity. */
const REPLAY = 150;

const csrfToken = (document.querySelector('meta[name="csrf-token"]') || {}).content || '';
/** The id of the last event published when the daemon served this page. */
const servedLastId = Number((document.querySelector('meta[name="last-event-id"]') || {}).content) || 0;

/** What the page knows; events and /api/status change it, render() shows it. */
const view = {
  status: null,        // /api/status
  cycles: [],          // newest first
  cycle: null,         // the running cycle's number
  phase: null,         // the running phase
  phaseStartedAt: null, // Date
  phaseAttempt: 1,
  cycleStartedAt: null, // Date, when an event told
  phaseResults: {},    // phase -> ok | failed | interrupted, this cycle
  waiting: null,       // { reason, detail, until: Date|null }
  paused: false,
  pauseRequested: false,
  stopRequested: false,
  stopped: null,       // { exit_code, reason } once the daemon stopped
  lastId: 0,
};

// ---------- small DOM helpers: text only, never HTML ----------

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === 'string' || typeof child === 'number'
      ? document.createTextNode(String(child)) : child);
  }
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  append(node, children);
  return node;
}

function setText(id, text) { $(id).textContent = text; }

// ---------- words for numbers and times ----------

function money(usd) {
  const value = Number(usd) || 0;
  return value >= 100 ? `$${value.toFixed(0)}` : value >= 1 ? `$${value.toFixed(2)}` : `$${value.toFixed(3)}`;
}

function duration(ms) {
  if (ms < 10000) return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${String(m % 60).padStart(2, '0')} min`;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

function when(date) {
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
  return sameDay ? time : `${date.toLocaleDateString([], { weekday: 'short', day: 'numeric', month: 'short' })} ${time}`;
}

function parseDate(text) {
  if (!text) return null;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

function shortRef(ref) {
  if (!ref) return '';
  return /^[0-9a-f]{12,}$/.test(ref) ? ref.slice(0, 10) : ref;
}

function tag(text, tone) { return el('span', { class: 'tag', 'data-tone': tone || null }, text); }

function outcomeTag(outcome) {
  const known = OUTCOMES[outcome] || { words: String(outcome || '?'), tone: '' };
  return tag(known.words, known.tone);
}

// ---------- the API ----------

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

/** POSTs a control request with the CSRF token; the daemon's answer in words. */
async function control(path) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'X-CSRF-Token': csrfToken, Accept: 'application/json' },
    cache: 'no-store',
  });
  const text = await response.text();
  let words = text;
  try {
    const body = JSON.parse(text);
    words = typeof body === 'string' ? body : body.answer || body.message || body.error || text;
  } catch (_) { /* plain text */ }
  return { ok: response.ok, words: String(words || `HTTP ${response.status}`).trim() };
}

/** The reason of a wait from status.json's words for it. */
function waitReasonOf(words) {
  if (/^throttled/.test(words)) return 'limiter';
  if (/^usage limit/.test(words)) return 'usage_limit';
  if (/^circuit breaker/.test(words)) return 'breaker';
  if (/backoff/.test(words)) return 'backoff';
  if (/^sleep/.test(words)) return 'sleep';
  if (/^paused/.test(words)) return 'paused';
  return words;
}

function cyclesOf(body) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body.cycles)) return body.cycles;
  return [];
}

// ---------- state from /api/status ----------

/**
 * Reads /api/status for the guards; with `takeNow` (start, reconnect) also
 * for what runs now, which afterwards the events keep up to date.
 */
async function refreshStatus(takeNow) {
  const status = await fetchOrSay('/api/status');
  if (!status) return;
  view.status = status;
  const file = status.status || {};
  if (file.state === 'stopped' || (!status.running && file.state)) {
    view.stopped = view.stopped || { exit_code: null, reason: file.exit || 'not running' };
  } else if (takeNow === true) {
    view.stopped = null;
  }
  if (takeNow === true) {
    view.cycle = file.cycle || view.cycle;
    // status.json keeps the last phase's name through a wait before the next.
    view.phase = file.waiting ? null : file.phase || null;
    view.phaseStartedAt = parseDate(file.phase_started_at);
    view.waiting = null;
    view.paused = false;
    if (file.waiting) {
      const reason = waitReasonOf(file.waiting.reason || '');
      view.paused = reason === 'paused';
      view.waiting = { reason, detail: file.waiting.reason, until: parseDate(file.waiting.until) };
    }
  }
  render();
}

async function refreshCycles() {
  const body = await fetchOrSay('/api/cycles?limit=200');
  if (!body) return;
  view.cycles = cyclesOf(body);
  renderCycles();
  renderCharts();
}

/**
 * GETs JSON; when the daemon cannot be reached or refuses, says so in the
 * link indicator and returns null. (A bug in drawing what came back is not
 * caught here: it shows as a script error.)
 */
async function fetchOrSay(path) {
  try {
    return await getJson(path);
  } catch (error) {
    setLink('down', error instanceof TypeError ? 'daemon unreachable' : error.message);
    return null;
  }
}

// ---------- the live stream ----------

let source = null;
let retryTimer = null;

function connect() {
  if (source) source.close();
  // EventSource sends Last-Event-ID by itself when it reconnects. A new
  // EventSource (the page loaded, or the daemon came back) asks with the
  // query parameter: from the last id this tab saw, or, to fill the
  // activity of a newly loaded page, from a little before the newest event.
  let after = view.lastId;
  if (!after) {
    const stored = Number(sessionStorage.getItem(LAST_ID_KEY)) || 0;
    const recent = Math.max(0, servedLastId - REPLAY);
    after = stored > 0 && stored <= servedLastId ? Math.min(stored, recent) : recent;
  }
  source = new EventSource(`/api/events?last_event_id=${after}`);
  source.onopen = () => setLink('live', 'live');
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      setLink('down', 'disconnected, retrying…');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => { connect(); refreshStatus(true); refreshCycles(); }, 3000);
    } else {
      setLink('connecting', 'reconnecting…');
    }
  };
  for (const type of ['daemon_started', 'cycle_started', 'phase_started', 'agent_text', 'tool_use',
    'phase_finished', 'check_finished', 'cycle_finished', 'waiting', 'breaker_changed', 'paused',
    'resumed', 'stop_requested', 'daemon_stopped']) {
    source.addEventListener(type, onMessage);
  }
  source.onmessage = onMessage;
}

function onMessage(message) {
  let event;
  try { event = JSON.parse(message.data); } catch (_) { return; }
  const id = Number(event.id || message.lastEventId) || 0;
  if (id && id <= view.lastId) return; // seen already (a replay overlaps)
  if (id) {
    view.lastId = id;
    sessionStorage.setItem(LAST_ID_KEY, String(id));
  }
  apply(event);
}

/** One event: change the view and add what it says to the activity. */
function apply(event) {
  const at = parseDate(event.at) || new Date();
  switch (event.type) {
    case 'daemon_started':
      // A daemon started after this page was served: its CSRF token (and
      // maybe its page) is new, so load the page again; it catches up from
      // the last event it saw.
      if (view.lastId > servedLastId) {
        window.location.reload();
        return;
      }
      Object.assign(view, { stopped: null, paused: false, pauseRequested: false, stopRequested: false, waiting: null, phase: null });
      activity(at, 'note', 'started', `ralphd ${event.version || ''} started (pid ${event.pid})`, 'ok');
      refreshStatus(true);
      refreshCycles();
      break;
    case 'cycle_started':
      Object.assign(view, { cycle: event.cycle, cycleStartedAt: at, phase: null, phaseResults: {}, waiting: null });
      activity(at, 'cycle', `cycle ${event.cycle}`, 'Cycle started');
      break;
    case 'phase_started':
      Object.assign(view, { cycle: event.cycle, phase: event.phase, phaseStartedAt: at, phaseAttempt: event.attempt || 1, waiting: null });
      activity(at, 'phase', event.phase, event.attempt > 1 ? `started (try ${event.attempt})` : 'started');
      break;
    case 'agent_text':
      activity(at, 'text', event.phase, event.text);
      break;
    case 'tool_use':
      activity(at, 'tool', event.tool, event.summary || '');
      break;
    case 'phase_finished': {
      view.phaseResults[event.phase] = event.status === 'succeeded' ? 'ok' : event.status;
      if (view.phase === event.phase) view.phase = null;
      const tone = event.status === 'succeeded' ? 'ok' : event.status === 'failed' ? 'bad' : 'warn';
      const words = `${event.status === 'succeeded' ? 'done' : event.status} in ${duration(event.duration_ms)} · ${money(event.cost_usd)}${event.error ? ` — ${event.error}` : ''}`;
      activity(at, 'phase', event.phase, words, tone);
      break;
    }
    case 'check_finished':
      activity(at, 'tool', event.passed ? 'check ✓' : 'check ✗',
        `${event.command} → ${event.exit === null ? 'no exit code' : `exit ${event.exit}`} in ${duration(event.duration_ms)}`,
        event.passed ? 'ok' : 'bad');
      break;
    case 'cycle_finished': {
      view.phase = null;
      const record = {
        cycle: event.cycle, outcome: event.outcome, title: event.title, reason: event.reason,
        commit: event.commit, attempt_ref: event.attempt_ref, cost_usd: event.cost_usd,
        duration_seconds: (event.duration_ms || 0) / 1000, ended_at: event.at, fresh: view.lastId > servedLastId,
      };
      view.cycles = [record, ...view.cycles.filter((c) => c.cycle !== event.cycle)];
      const known = OUTCOMES[event.outcome] || {};
      activity(at, 'cycle', `cycle ${event.cycle}`, `${known.words || event.outcome}${event.title ? `: ${event.title}` : ''}`,
        known.tone === 'ok' || known.tone === 'info' ? 'ok' : known.tone);
      renderCycles();
      renderCharts();
      refreshStatus();
      break;
    }
    case 'waiting':
      view.waiting = { reason: event.reason, detail: event.detail, until: parseDate(event.until) };
      if (event.reason === 'paused') view.paused = true;
      activity(at, 'note', 'waiting', event.detail || event.reason, 'warn');
      break;
    case 'breaker_changed':
      activity(at, 'note', 'breaker', event.detail || event.state, event.state === 'closed' ? 'ok' : 'warn');
      refreshStatus();
      break;
    case 'paused':
      Object.assign(view, { paused: true, pauseRequested: false, phase: null });
      view.waiting = { reason: 'paused', detail: 'paused: no new phase run starts until resumed', until: null };
      activity(at, 'note', 'paused', 'Paused on request', 'warn');
      break;
    case 'resumed':
      Object.assign(view, { paused: false, pauseRequested: false, waiting: null });
      activity(at, 'note', 'resumed', 'Resumed', 'ok');
      break;
    case 'stop_requested':
      view.stopRequested = true;
      activity(at, 'note', 'stop', 'Stop requested: the run ends after this cycle', 'warn');
      break;
    case 'daemon_stopped':
      Object.assign(view, { stopped: { exit_code: event.exit_code, reason: event.reason }, phase: null, waiting: null });
      activity(at, 'note', 'stopped', `ralphd stopped (exit ${event.exit_code}): ${event.reason}`, event.exit_code === 0 ? 'ok' : 'warn');
      refreshStatus();
      break;
    default:
      return;
  }
  renderNow();
  renderRunning();
  renderControls();
}

// ---------- rendering ----------

function setLink(state, words) {
  const link = $('link');
  link.dataset.state = state;
  link.textContent = words;
}

function render() {
  const status = view.status || {};
  const file = status.status || {};
  const repo = file.repo || '';
  setText('repo', repo ? repo.split('/').filter(Boolean).pop() : 'ralphd');
  $('repo').title = repo;
  setText('branch', file.branch || status.branch || '—');
  renderNow();
  renderGuards();
  renderRunning();
  renderControls();
}

function renderNow() {
  const state = $('state');
  const detail = $('state-detail');
  state.textContent = '';
  let kind = 'running';
  let words = '';
  if (view.stopped) {
    kind = 'stopped';
    state.append('Stopped');
    words = view.stopped.reason || '';
  } else if (view.paused) {
    kind = 'paused';
    state.append(view.cycle ? `Paused · cycle ${view.cycle}` : 'Paused');
    words = 'No new phase run starts until you press Resume.';
  } else if (view.phase) {
    state.append(`Cycle ${view.cycle ?? '?'} · ${view.phase} · `,
      el('span', { class: 'elapsed', id: 'elapsed' }, view.phaseStartedAt ? duration(Date.now() - view.phaseStartedAt) : '…'));
    const parts = [];
    if (view.phaseStartedAt) parts.push(`started ${clock(view.phaseStartedAt)}`);
    if (view.phaseAttempt > 1) parts.push(`try ${view.phaseAttempt}`);
    if (view.cycleStartedAt) parts.push(`cycle started ${clock(view.cycleStartedAt)}`);
    if (view.pauseRequested) parts.push('pause requested: this phase run finishes first');
    words = parts.join(' · ');
  } else if (view.waiting) {
    kind = 'waiting';
    state.append(`Waiting · ${WAITS[view.waiting.reason] || view.waiting.reason}`);
    words = view.waiting.detail || '';
    if (view.waiting.until) {
      words += `${words ? ' — ' : ''}until ${when(view.waiting.until)} `;
      state.append(' · ', el('span', { class: 'elapsed', id: 'elapsed' }, `${duration(view.waiting.until - Date.now())} left`));
    }
  } else if (view.cycle) {
    state.append(`Cycle ${view.cycle}`);
    words = 'Between phases.';
  } else {
    kind = 'starting';
    state.append(view.status ? 'Starting' : 'Loading…');
  }
  if (view.stopRequested && !view.stopped) words = `${words ? `${words} ` : ''}Stop requested: the run ends after this cycle.`;
  state.dataset.kind = kind;
  detail.textContent = words;
  document.title = view.stopped ? 'ralphd · stopped' : view.paused ? 'ralphd · paused'
    : view.cycle ? `ralphd · cycle ${view.cycle}${view.phase ? ` · ${view.phase}` : ''}` : 'ralphd';
  renderSince();

  const list = $('phases');
  list.textContent = '';
  for (const phase of PHASES) {
    const result = view.phase === phase ? 'running' : view.phaseResults[phase] || 'pending';
    list.append(el('li', { 'data-state': result, title: `${phase}: ${result}` }, phase));
  }
}

/** What this daemon did since it started: the morning's summary. */
function renderSince() {
  const since = $('since');
  since.textContent = '';
  const file = (view.status && view.status.status) || {};
  const started = parseDate(file.started_at);
  if (!started) return;
  const mine = view.cycles.filter((c) => (parseDate(c.ended_at) || 0) >= started);
  const committed = mine.filter((c) => c.outcome === 'committed' || c.outcome === 'complete').length;
  const cost = mine.reduce((sum, c) => sum + (Number(c.cost_usd) || 0), 0);
  since.append(view.stopped ? 'Ran from ' : 'Running since ', el('b', {}, when(started)),
    view.stopped ? '' : ` (${duration(Date.now() - started)})`, ' · ',
    el('b', {}, `${mine.length} cycle${mine.length === 1 ? '' : 's'} done`), ', ',
    el('b', {}, `${committed} committed`), ', ', el('b', {}, money(cost)));
}

/** Updates only the ticking numbers, once a second. */
function tick() {
  renderSince();
  const runningTime = $('running-time');
  if (runningTime && view.cycleStartedAt) runningTime.textContent = duration(Date.now() - view.cycleStartedAt);
  const elapsed = $('elapsed');
  if (!elapsed) return;
  if (view.phase && view.phaseStartedAt) elapsed.textContent = duration(Date.now() - view.phaseStartedAt);
  else if (view.waiting && view.waiting.until) elapsed.textContent = `${duration(view.waiting.until - Date.now())} left`;
}

function renderGuards() {
  const status = view.status || {};
  const file = status.status || {};
  // Limiter: throttled now, or how much of its quota the last hour used.
  const limiter = $('limiter');
  limiter.textContent = '';
  const limit = status.limiter || null;
  if (view.waiting && view.waiting.reason === 'limiter') {
    limiter.append(tag('throttled', 'warn'), view.waiting.until ? `until ${when(view.waiting.until)}` : view.waiting.detail || '');
  } else if (limit && typeof limit === 'object' && limit.calls_last_hour !== undefined) {
    limiter.append(tag('ok', 'ok'), `${limit.calls_last_hour} of ${limit.requests_per_hour ?? '∞'} calls in the last hour`);
  } else {
    limiter.append(tag('ok', 'ok'), 'not throttling');
  }
  // Breaker: breaker.json's state, or status.json's line about it.
  const breaker = $('breaker');
  breaker.textContent = '';
  const snapshot = (status.breaker && status.breaker.state) || {};
  const line = file.breaker || '';
  const kind = snapshot.kind || (line.match(/^(closed|open|half-open)/) || [])[1] || '';
  const open = kind === 'open';
  const half = kind === 'half_open' || kind === 'half-open';
  breaker.append(tag(kind ? kind.replace('_', '-') : 'unknown', open ? 'bad' : half ? 'warn' : kind ? 'ok' : ''));
  if (open) {
    const until = parseDate(snapshot.until);
    const reasons = ((status.breaker && status.breaker.recent_failures) || []).slice(-3).map((f) => f.reason);
    breaker.append(until ? `until ${when(until)}` : '', reasons.length ? ` — ${reasons.join('; ')}` : '');
  } else if (half) {
    breaker.append(`a probe cycle decides${snapshot.probes_passed ? ` (${snapshot.probes_passed} passed)` : ''}`);
  } else if (snapshot.consecutive_failures !== undefined) {
    const n = snapshot.consecutive_failures;
    breaker.append(n ? `${n} failed cycle${n === 1 ? '' : 's'} in a row` : 'no failed cycle in a row');
  } else if (line) {
    breaker.append(line.replace(/^(closed|open|half-open)\s*/, ''));
  }
  $('reset-breaker').hidden = !(open || half);
  // Budget.
  const spent = Number(file.spent_usd ?? status.total_cost_usd ?? 0);
  const cap = file.max_cost_usd;
  const bar = $('budget-bar');
  if (cap) {
    const share = Math.min(1, spent / cap);
    setText('budget', `${money(spent)} of ${money(cap)} (${Math.round(share * 100)} %)`);
    bar.style.width = `${(share * 100).toFixed(1)}%`;
    bar.dataset.level = share >= 1 ? 'full' : share >= 0.8 ? 'high' : 'ok';
    bar.parentElement.hidden = false;
  } else {
    setText('budget', `${money(spent)} spent · no cap`);
    bar.parentElement.hidden = true;
  }
}

function renderControls() {
  const running = !view.stopped && !!view.status && view.status.running !== false;
  $('pause').disabled = !running || view.paused || view.pauseRequested;
  $('resume').disabled = !running || !(view.paused || view.pauseRequested);
  $('stop').disabled = !running || view.stopRequested;
}

function activity(at, kind, what, body, tone) {
  const feed = $('activity');
  const item = el('li', { 'data-kind': kind, 'data-tone': tone || null },
    el('time', { datetime: at.toISOString() }, clock(at)),
    el('span', { class: 'what', title: what }, what),
    el('span', { class: 'body' }, body));
  if (kind === 'text') {
    item.title = 'Click to show all';
    item.addEventListener('click', () => item.classList.toggle('open'));
  }
  feed.prepend(item);
  while (feed.children.length > ACTIVITY_MAX) feed.lastElementChild.remove();
  $('activity-empty').hidden = true;
}

/** The running cycle as the table's first row, until its record is in. */
function renderRunning() {
  const body = $('running');
  body.textContent = '';
  const cycle = view.cycle;
  if (!cycle || view.stopped || view.cycles.some((c) => c.cycle === cycle)) return;
  const doing = view.paused ? 'paused' : view.phase ? `${view.phase}…` : view.waiting ? 'waiting' : 'between phases';
  const row = el('tr', { tabindex: 0, 'data-cycle': cycle, class: 'running' },
    el('td', { class: 'n' }, String(cycle)),
    el('td', {}, tag('running', 'info')),
    el('td', { class: 'title' }, el('span', { class: 'muted' }, `in progress: ${doing}`)),
    el('td', { class: 'num' }, ''),
    el('td', { class: 'num wide', id: 'running-time' }, view.cycleStartedAt ? duration(Date.now() - view.cycleStartedAt) : ''),
    el('td', { class: 'ref wide' }, ''));
  row.addEventListener('click', () => openCycle(cycle));
  body.append(row);
}

function renderCycles() {
  const body = $('cycles');
  body.textContent = '';
  for (const record of view.cycles) {
    const ref = record.commit || record.attempt_ref;
    const row = el('tr', { tabindex: 0, 'data-cycle': record.cycle, class: record.fresh ? 'new' : null },
      el('td', { class: 'n' }, String(record.cycle)),
      el('td', {}, outcomeTag(record.outcome)),
      el('td', { class: 'title' }, record.title || el('span', { class: 'muted' }, '(no title)'),
        record.reason ? el('span', { class: 'why' }, record.reason) : null),
      el('td', { class: 'num' }, money(record.cost_usd)),
      el('td', { class: 'num wide' }, duration((record.duration_seconds || 0) * 1000)),
      el('td', { class: 'ref wide' }, ref ? el('code', { title: ref }, shortRef(ref)) : '—'));
    record.fresh = false;
    row.addEventListener('click', () => openCycle(record.cycle));
    row.addEventListener('keydown', (event) => { if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); openCycle(record.cycle); } });
    body.append(row);
  }
  $('cycles-empty').hidden = view.cycles.length > 0;
  renderRunning();
  renderSince();
}

function renderCharts() {
  const cycles = view.cycles.slice(0, CHART_CYCLES).reverse();
  const costBox = $('cost-chart');
  const outcomeBox = $('outcome-chart');
  costBox.textContent = '';
  outcomeBox.textContent = '';
  const total = view.cycles.reduce((sum, c) => sum + (Number(c.cost_usd) || 0), 0);
  setText('cost-total', view.cycles.length ? `· ${money(total)} over ${view.cycles.length} cycles` : '');
  outcomeBox.parentElement.hidden = !cycles.length;
  if (!cycles.length) {
    costBox.append(el('p', { class: 'empty' }, 'The charts fill in as cycles finish.'));
    return;
  }
  // Cost per cycle: one bar each, coloured by outcome, and the running total.
  const width = 320;
  const height = 96;
  const pad = { left: 44, right: 4, top: 6, bottom: 14 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const max = Math.max(...cycles.map((c) => Number(c.cost_usd) || 0), 0.001);
  // Slots of at most 26 px: a short run's bars stand together on the left.
  const step = Math.min(26, innerW / cycles.length);
  const barW = Math.max(1.5, Math.min(18, step * 0.72));
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Cost of the last ${cycles.length} cycles` },
    svg('line', { class: 'axis', x1: pad.left, x2: width - pad.right, y1: pad.top + innerH, y2: pad.top + innerH }),
    svg('text', { class: 'axis-label', x: pad.left - 4, y: pad.top + 8, 'text-anchor': 'end' }, money(max)),
    svg('text', { class: 'axis-label', x: pad.left - 4, y: pad.top + innerH, 'text-anchor': 'end' }, '$0'),
    svg('text', { class: 'axis-label', x: pad.left, y: height - 2 }, `#${cycles[0].cycle}`));
  if (cycles.length > 2) {
    chart.append(svg('text', { class: 'axis-label', x: pad.left + step * cycles.length, y: height - 2, 'text-anchor': 'end' }, `#${cycles[cycles.length - 1].cycle}`));
  }
  cycles.forEach((c, index) => {
    const value = Number(c.cost_usd) || 0;
    const h = Math.max(1, (value / max) * innerH);
    const x = pad.left + index * step + (step - barW) / 2;
    chart.append(svg('rect', { class: `o-${c.outcome}`, x: x.toFixed(1), y: (pad.top + innerH - h).toFixed(1), width: barW.toFixed(1), height: h.toFixed(1), rx: 1.5 },
      svg('title', {}, `cycle ${c.cycle}: ${money(value)}, ${(OUTCOMES[c.outcome] || {}).words || c.outcome}`)));
  });
  costBox.append(chart);

  // Outcomes: one square per cycle, oldest left, and the counts.
  const cell = 12;
  const perRow = Math.max(1, Math.floor(width / (cell + 3)));
  const rows = Math.ceil(cycles.length / perRow);
  const strip = svg('svg', { viewBox: `0 0 ${width} ${rows * (cell + 3)}`, role: 'img', 'aria-label': 'Outcome of each cycle, oldest first' });
  cycles.forEach((c, index) => {
    strip.append(svg('rect', { class: `o-${c.outcome}`, x: (index % perRow) * (cell + 3), y: Math.floor(index / perRow) * (cell + 3), width: cell, height: cell, rx: 2.5 },
      svg('title', {}, `cycle ${c.cycle}: ${(OUTCOMES[c.outcome] || {}).words || c.outcome}${c.title ? ` — ${c.title}` : ''}`)));
  });
  outcomeBox.append(strip);
  const counts = {};
  for (const c of view.cycles) counts[c.outcome] = (counts[c.outcome] || 0) + 1;
  const legend = el('ul', { class: 'legend' });
  for (const [outcome, known] of Object.entries(OUTCOMES)) {
    if (counts[outcome]) legend.append(el('li', {}, el('i', { class: `o-${outcome}` }), `${known.words} ${counts[outcome]}`));
  }
  outcomeBox.append(legend);
  const committed = (counts.committed || 0) + (counts.complete || 0);
  setText('outcome-counts', `· ${committed} of ${view.cycles.length} committed`);
}

// ---------- the cycle detail ----------

async function openCycle(number) {
  const dialog = $('detail');
  const body = $('detail-body');
  setText('detail-title', `Cycle ${number}`);
  body.textContent = '';
  body.append(el('p', { class: 'muted' }, 'Loading…'));
  if (!dialog.open) dialog.showModal();
  let detail;
  try {
    detail = await getJson(`/api/cycles/${encodeURIComponent(number)}`);
  } catch (error) {
    body.textContent = '';
    body.append(el('p', {}, `Cannot load cycle ${number}: ${error.message}`));
    return;
  }
  // The record is null while the cycle still runs.
  const record = detail.record || { cycle: detail.cycle ?? number };
  setText('detail-title', `Cycle ${record.cycle}${record.title ? ` — ${record.title}` : ''}`);
  body.textContent = '';
  const ref = detail.commit || detail.attempt_ref;
  body.append(el('ul', { class: 'facts' },
    el('li', {}, record.outcome ? outcomeTag(record.outcome) : tag('running', 'info')),
    record.outcome ? el('li', {}, 'cost ', el('b', {}, money(record.cost_usd))) : null,
    record.outcome ? el('li', {}, 'time ', el('b', {}, duration((record.duration_seconds || 0) * 1000))) : null,
    parseDate(record.ended_at) ? el('li', {}, 'ended ', el('b', {}, when(parseDate(record.ended_at)))) : null,
    ref ? el('li', {}, detail.commit ? 'commit ' : 'attempt ', el('code', {}, ref)) : null));
  if (record.reason) body.append(el('p', {}, record.reason));

  if (detail.diff) body.append(el('h3', {}, 'Diff'), el('p', { class: 'mono' }, diffWords(detail.diff)));

  const transcripts = (detail.phases || []).filter((p) => p.transcript);
  if (transcripts.length) {
    body.append(el('h3', {}, 'Transcripts'), el('ul', { class: 'links' },
      transcripts.map((p) => el('li', {}, el('a', { href: p.transcript, target: '_blank', rel: 'noopener noreferrer' }, p.phase)))));
  }
  const report = detail.report;
  body.append(el('h3', {}, 'Report'));
  body.append(report ? markdown(String(report)) : el('p', { class: 'muted' }, 'No report for this cycle.'));
}

function diffWords(diff) {
  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  return `${plural(diff.files_changed, 'file')} changed, ${plural(diff.insertions, 'insertion')}(+), ${plural(diff.deletions, 'deletion')}(-)`;
}

/**
 * A small Markdown reader for report.md: headings, lists, fenced code,
 * quotes, paragraphs; inline code, bold, italics and http(s) links. It builds
 * DOM nodes from text; nothing is ever parsed as HTML.
 */
function markdown(source) {
  const root = el('div', { class: 'md' });
  const lines = source.replace(/\r\n?/g, '\n').split('\n');
  let paragraph = [];
  let list = null;
  const flush = () => {
    if (paragraph.length) root.append(el('p', {}, inline(paragraph.join(' '))));
    paragraph = [];
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)/);
    if (fence) {
      flush(); list = null;
      const code = [];
      for (i += 1; i < lines.length && !lines[i].trim().startsWith(fence[1]); i += 1) code.push(lines[i]);
      root.append(el('pre', {}, el('code', {}, code.join('\n'))));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flush(); list = null;
      root.append(el(`h${Math.min(4, heading[1].length + 1)}`, {}, inline(heading[2])));
      continue;
    }
    const item = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      if (!list || list.ordered !== ordered) {
        list = { ordered, node: el(ordered ? 'ol' : 'ul') };
        root.append(list.node);
      }
      list.node.append(el('li', {}, inline(item[2])));
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) {
      list.node.lastElementChild.append(' ', ...inline(line.trim()));
      continue;
    }
    const quote = line.match(/^>\s?(.*)$/);
    if (quote) {
      flush(); list = null;
      root.append(el('blockquote', {}, inline(quote[1])));
      continue;
    }
    if (!line.trim()) { flush(); list = null; continue; }
    list = null;
    paragraph.push(line.trim());
  }
  flush();
  return root;
}

/** Inline Markdown to nodes: `code`, **bold**, *em* / _em_, [text](http…). */
function inline(text) {
  const nodes = [];
  const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|\b_([^_]+)_\b|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g;
  let last = 0;
  let match;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    if (match[1] !== undefined) nodes.push(el('code', {}, match[1]));
    else if (match[2] !== undefined) nodes.push(el('strong', {}, inline(match[2])));
    else if (match[3] !== undefined) nodes.push(el('em', {}, match[3]));
    else if (match[4] !== undefined) nodes.push(el('em', {}, match[4]));
    else nodes.push(el('a', { href: match[6], rel: 'noopener noreferrer nofollow', target: '_blank' }, match[5]));
    last = pattern.lastIndex;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

// ---------- the buttons ----------

let answerTimer = null;
/** Shows the daemon's answer to a button for a while. */
function showAnswer(words, ok) {
  const answer = $('answer');
  answer.hidden = false;
  answer.dataset.kind = ok ? 'ok' : 'error';
  answer.textContent = words;
  clearTimeout(answerTimer);
  answerTimer = setTimeout(() => { answer.hidden = true; }, ok ? 15000 : 60000);
}

async function press(path, button, after) {
  button.disabled = true;
  try {
    const { ok, words } = await control(path);
    showAnswer(words, ok);
    if (ok && after) after();
  } catch (error) {
    showAnswer(`The daemon did not answer: ${error.message}`, false);
  }
  renderNow();
  renderControls();
}

let stopArmed = null;
function setupControls() {
  $('pause').addEventListener('click', (event) => press('/api/pause', event.currentTarget, () => {
    if (!view.paused) view.pauseRequested = true;
  }));
  $('resume').addEventListener('click', (event) => press('/api/resume', event.currentTarget, () => {
    view.pauseRequested = false;
  }));
  // Stop cannot be taken back: the first click asks, the second stops.
  const stop = $('stop');
  stop.addEventListener('click', () => {
    if (!stopArmed) {
      stop.classList.add('armed');
      stop.textContent = 'Stop after this cycle?';
      stopArmed = setTimeout(disarm, 5000);
      return;
    }
    disarm();
    press('/api/stop', stop, () => { view.stopRequested = true; });
  });
  function disarm() {
    clearTimeout(stopArmed);
    stopArmed = null;
    stop.classList.remove('armed');
    stop.textContent = 'Stop';
  }
  $('reset-breaker').addEventListener('click', (event) => press('/api/breaker/reset', event.currentTarget, refreshStatus));
  $('detail-close').addEventListener('click', () => $('detail').close());
  $('detail').addEventListener('click', (event) => { if (event.target === $('detail')) $('detail').close(); });
}

// ---------- start ----------

setupControls();
renderNow();
renderControls();
refreshStatus(true).then(refreshCycles);
connect();
setInterval(tick, 1000);
// The guards change without events (the limiter refills): a slow refresh.
setInterval(refreshStatus, 30000);
