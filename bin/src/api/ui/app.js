// ferry's dashboard: plain JavaScript, no build step, no dependency.
// Live data comes from the API's NDJSON streams read with fetch (so the
// bearer token can be sent), resumed with ?after=N after a drop; only the
// server panel samples /readyz and /metrics. Every value from the server
// is written with textContent, never parsed as HTML.
'use strict';

const $ = (sel) => document.querySelector(sel);
const TERMINAL_JOB = ['completed', 'completed_with_errors', 'failed', 'cancelled'];
const TOKEN_KEY = 'ferry-token';

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  jobs: new Map(),        // id -> job (as the API shows it)
  rates: new Map(),       // id -> {bytes, at, rate}
  follows: [],            // live streams of the current view
  serverTimer: null,
  samples: [],            // [at_ms, transferred_bytes_total]
};

class AuthNeeded extends Error {}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return (i === 0 ? v : v.toFixed(1)) + ' ' + units[i];
}

function rate(bps) { return bps > 0 ? bytes(bps) + '/s' : ''; }

function age(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.round(s / 60) + ' min';
  if (s < 86400) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
}

function eta(remaining, bps) {
  if (!(bps > 0) || !(remaining > 0)) return '';
  const s = Math.round(remaining / bps);
  return s < 60 ? s + ' s' : Math.round(s / 60) + ' min';
}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h.Authorization = 'Bearer ' + state.token;
  return h;
}

// One API call; a 401 asks for a token, other errors carry the API's
// code and field.
async function api(method, path, body) {
  const init = { method, headers: authHeaders(body ? { 'Content-Type': 'application/json' } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (resp.status === 401) { askToken(state.token ? 'That token was refused.' : ''); throw new AuthNeeded(); }
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (!resp.ok) {
    const e = new Error((data && data.error && data.error.message) || ('HTTP ' + resp.status));
    e.status = resp.status;
    e.field = data && data.error && data.error.field;
    e.code = data && data.error && data.error.code;
    throw e;
  }
  return data;
}

function setConn(text) { $('#conn').textContent = text; }

// Follows an NDJSON stream; `path` may take ?after=N. Reconnects with
// backoff after a drop, resuming after the last event seen (per job), so
// nothing is shown twice. Ends on a terminal event or stop().
class Follow {
  constructor(path, onItem, resumable) {
    this.path = path;
    this.onItem = onItem;
    this.resumable = resumable;
    this.after = null;
    this.stopped = false;
    this.controller = null;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  url() {
    if (!this.resumable || this.after === null) return this.path;
    return this.path + (this.path.includes('?') ? '&' : '?') + 'after=' + this.after;
  }

  async run() {
    let delay = 500;
    while (!this.stopped) {
      let ended = false;
      try {
        this.controller = new AbortController();
        const resp = await fetch(this.url(), {
          headers: authHeaders({ Accept: 'application/x-ndjson' }),
          signal: this.controller.signal,
        });
        if (resp.status === 401) { askToken('That token was refused.'); return; }
        if (!resp.ok) throw new Error('HTTP ' + resp.status);
        setConn('live');
        delay = 500;
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buffered = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buffered.indexOf('\n')) >= 0) {
            const line = buffered.slice(0, nl).trim();
            buffered = buffered.slice(nl + 1);
            if (!line) continue;
            const item = JSON.parse(line);
            if (typeof item.seq === 'number' && item.type !== 'snapshot') {
              if (this.resumable && this.after !== null && item.seq <= this.after) continue;
              this.after = item.seq;
            } else if (item.type === 'snapshot' && typeof item.seq === 'number') {
              this.after = item.seq;
            }
            if (this.onItem(item) === 'end') { ended = true; this.stop(); break; }
          }
          if (ended) break;
        }
      } catch (e) {
        if (this.stopped) return;
      }
      if (this.stopped || ended) return;
      setConn('reconnecting…');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }
}

function stopFollows() {
  state.follows.forEach((f) => f.stop());
  state.follows = [];
  if (state.serverTimer) { clearInterval(state.serverTimer); state.serverTimer = null; }
}

function show(id) {
  ['#token-view', '#jobs-view', '#job-view', '#submit-view'].forEach((v) => { $(v).hidden = v !== id; });
}

function askToken(message) {
  stopFollows();
  show('#token-view');
  $('#token-error').textContent = message || '';
  $('#token-input').focus();
}

// ---- jobs list -------------------------------------------------------

function statusCell(status) {
  const td = el('td', status.replace(/_/g, ' '), 'status status-' + status);
  return td;
}

function jobRow(job) {
  const tr = el('tr');
  tr.dataset.id = job.id;
  const link = el('a', job.id);
  link.href = '#/jobs/' + encodeURIComponent(job.id);
  const idCell = el('td');
  idCell.appendChild(link);
  const s = job.summary;
  const r = state.rates.get(job.id);
  tr.append(
    idCell,
    statusCell(job.status),
    el('td', job.owner || '', 'owner-col'),
    el('td', job.destination || '(files root)'),
    el('td', (s.succeeded + s.skipped) + ' / ' + s.failed + ' / ' + s.total, 'num'),
    el('td', bytes(s.bytes_done), 'num'),
    el('td', TERMINAL_JOB.includes(job.status) ? '' : rate(r ? r.rate : 0), 'num'),
    el('td', age(job.created_at_ms), 'num'),
  );
  return tr;
}

function renderJobs() {
  const filter = $('#status-filter').value;
  const tbody = $('#jobs-table tbody');
  const jobs = [...state.jobs.values()]
    .filter((j) => !filter || j.status === filter)
    .sort((a, b) => b.created_at_ms - a.created_at_ms || (a.id < b.id ? 1 : -1));
  tbody.replaceChildren(...jobs.map(jobRow));
  $('#jobs-empty').hidden = jobs.length > 0;
  const owners = jobs.some((j) => j.owner);
  document.querySelectorAll('.owner-col').forEach((c) => { c.hidden = !owners; });
}

// A smoothed rate (bytes/s) per key in `rates`, from successive byte
// counts at least `minSeconds` apart.
function noteRate(rates, key, bytesDone, start, minSeconds) {
  const now = Date.now();
  const r = rates.get(key) || { bytes: start, at: now, rate: 0 };
  const dt = (now - r.at) / 1000;
  if (dt >= minSeconds) {
    const inst = Math.max(0, (bytesDone - r.bytes) / dt);
    r.rate = r.rate ? r.rate * 0.5 + inst * 0.5 : inst;
    r.bytes = bytesDone;
    r.at = now;
  }
  rates.set(key, r);
}

const refreshing = new Map();
// A job's row again from the API, at most every 300 ms per job.
function refreshJob(id) {
  if (refreshing.has(id)) return;
  refreshing.set(id, setTimeout(async () => {
    refreshing.delete(id);
    try {
      const job = await api('GET', '/v1/jobs/' + encodeURIComponent(id));
      state.jobs.set(job.id, job);
      renderJobs();
    } catch (_) { /* shown by the next event */ }
  }, 300));
}

function onJobsItem(item) {
  if (item.type === 'snapshot' && item.jobs) {
    // After a reconnect: jobs that ended meanwhile are not in it.
    const live = new Set(item.jobs.map((j) => j.id));
    [...state.jobs.values()]
      .filter((j) => !TERMINAL_JOB.includes(j.status) && !live.has(j.id))
      .forEach((j) => refreshJob(j.id));
    item.jobs.forEach((j) => state.jobs.set(j.id, j));
    renderJobs();
    return undefined;
  }
  if (item.type === 'snapshot' && item.job) {
    state.jobs.set(item.job.id, item.job);
    renderJobs();
    return;
  }
  if (!item.job_id) return;
  const job = state.jobs.get(item.job_id);
  if (item.type === 'file_progress') {
    if (job) {
      // Listed jobs carry no files: each file's last progress is kept
      // here, and the job's bytes move by its difference.
      const seen = job.progressed || (job.progressed = new Map());
      const before = seen.get(item.index) || 0;
      seen.set(item.index, item.bytes_done);
      job.summary.bytes_done += Math.max(0, item.bytes_done - before);
      const total = job.summary.bytes_done;
      noteRate(state.rates, item.job_id, total, total, 1);
      renderJobs();
    }
    return;
  }
  refreshJob(item.job_id);
  return undefined;
}

async function jobsView() {
  show('#jobs-view');
  state.jobs.clear();
  try {
    const page = await api('GET', '/v1/jobs?limit=100');
    page.jobs.forEach((j) => state.jobs.set(j.id, j));
    renderJobs();
  } catch (e) {
    if (e instanceof AuthNeeded) return;
    setConn(e.message);
  }
  // One stream per tab: every job this token may see (all for an admin).
  state.follows.push(new Follow('/v1/events', (item) => { onJobsItem(item); }, false));
  serverPanel();
}

// ---- server panel ------------------------------------------------------

function metric(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.split(' ')[1]) : null;
}

async function sampleServer() {
  const facts = [];
  try {
    const ready = await fetch('/readyz').then((r) => r.json());
    if (ready.pressure) {
      facts.push(['Pressure', ready.pressure.level]);
      facts.push(['Admitted transfers', ready.pressure.admitted + ' of ' + ready.pressure.cap]);
    }
    facts.push(['Ready', ready.status]);
  } catch (_) { facts.push(['Ready', 'unreachable']); }
  try {
    const resp = await fetch('/metrics', { headers: authHeaders() });
    if (resp.ok) {
      const text = await resp.text();
      const inUse = metric(text, 'ferry_memory_budget_in_use_bytes');
      const budget = metric(text, 'ferry_memory_budget_bytes');
      const rss = metric(text, 'ferry_memory_rss_bytes');
      const active = metric(text, 'ferry_active_transfers');
      const moved = metric(text, 'ferry_transferred_bytes_total');
      if (budget !== null) facts.push(['Memory budget in use', bytes(inUse) + ' of ' + bytes(budget)]);
      if (rss !== null) facts.push(['RSS', bytes(rss)]);
      if (active !== null) facts.push(['Active transfers', active]);
      if (moved !== null) {
        state.samples.push([Date.now(), moved]);
        const cutoff = Date.now() - 5 * 60 * 1000;
        state.samples = state.samples.filter(([at]) => at >= cutoff);
        drawChart();
      }
    }
  } catch (_) { /* metrics are optional */ }
  const dl = $('#server-facts');
  dl.replaceChildren(...facts.flatMap(([k, v]) => [el('dt', k), el('dd', v)]));
}

function drawChart() {
  const s = state.samples;
  const points = [];
  for (let i = 1; i < s.length; i += 1) {
    const dt = (s[i][0] - s[i - 1][0]) / 1000;
    points.push([s[i][0], dt > 0 ? Math.max(0, (s[i][1] - s[i - 1][1]) / dt) : 0]);
  }
  const max = Math.max(1, ...points.map((p) => p[1]));
  const start = Date.now() - 5 * 60 * 1000;
  const xy = points.map(([at, v]) => {
    const x = ((at - start) / (5 * 60 * 1000)) * 300;
    const y = 78 - (v / max) * 74;
    return x.toFixed(1) + ',' + y.toFixed(1);
  });
  $('#chart-line').setAttribute('points', xy.join(' '));
  $('#chart-caption').textContent = 'Throughput (last 5 minutes; peak ' + rate(max) + ')';
}

function serverPanel() {
  sampleServer();
  state.serverTimer = setInterval(sampleServer, 5000);
}

// ---- one job ------------------------------------------------------------

const fileRates = new Map();

function fileRow(f) {
  const tr = el('tr');
  tr.dataset.index = f.index;
  const bar = el('progress');
  bar.max = Math.max(f.total || f.bytes_done || 1, 1);
  bar.value = f.status === 'succeeded' || f.status === 'skipped' ? bar.max : (f.bytes_done || 0);
  bar.setAttribute('aria-label', 'file ' + f.index + ' progress');
  const barCell = el('td');
  barCell.append(bar, el('span', ' ' + bytes(f.bytes_done || 0)));
  const r = fileRates.get(f.index);
  const running = f.status === 'running';
  tr.append(
    el('td', f.index, 'num'),
    el('td', f.key),
    barCell,
    el('td', running && r ? rate(r.rate) : '', 'num'),
    el('td', running && r && f.total ? eta(f.total - f.bytes_done, r.rate) : '', 'num'),
    statusCell(f.retrying ? 'retrying' : f.status),
    el('td', f.attempts, 'num'),
    el('td', f.error ? f.error.code + ': ' + f.error.message : ''),
  );
  return tr;
}

function renderJob(job) {
  $('#job-title').textContent = 'Job ' + job.id;
  const facts = [
    ['Status', job.status.replace(/_/g, ' ')],
    ['Destination', job.destination || '(files root)'],
    ['Files', job.summary.succeeded + ' succeeded, ' + job.summary.skipped + ' skipped, '
      + job.summary.failed + ' failed, ' + job.summary.total + ' in all'],
    ['Bytes', bytes(job.summary.bytes_done)],
    ['Created', new Date(job.created_at_ms).toISOString()],
  ];
  if (job.owner) facts.push(['Owner', job.owner]);
  if (job.export) facts.push(['Export', job.export.status_url ? 'polling ' + job.export.status_url : 'starting at ' + job.export.start_url]);
  if (job.has_task_token) facts.push(['Step Functions', job.callback || 'answered when the job ends']);
  if (job.failure) facts.push(['Failure', job.failure]);
  $('#job-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', k), el('dd', v)]));
  $('#files-table tbody').replaceChildren(...job.files.map(fileRow));
  $('#more-files').hidden = !job.files_next_cursor;
  $('#cancel-button').hidden = TERMINAL_JOB.includes(job.status);
}

// A job's answer carries its first files; the rest come a page at a time.
async function moreFiles(job) {
  if (!job.files_next_cursor) return;
  const page = await api('GET', '/v1/jobs/' + encodeURIComponent(job.id)
    + '/files?limit=1000&cursor=' + encodeURIComponent(job.files_next_cursor));
  page.files.forEach((f) => { if (!job.files[f.index]) job.files[f.index] = f; });
  job.files_next_cursor = page.next_cursor;
  renderJob(job);
}

// A file's state changed: the job's counts follow. The state it left is
// the shown one, else one the events imply (a first start leaves queued,
// anything else leaves running: every end follows a start).
function moveFile(job, item, to) {
  const f = job.files[item.index];
  const states = job.states || (job.states = new Map());
  let from = states.get(item.index) || (f && f.status);
  if (!from) from = item.type === 'file_started' && item.attempt === 1 ? 'queued' : 'running';
  states.set(item.index, to);
  if (from === to) return;
  if (job.summary[from] !== undefined) job.summary[from] = Math.max(0, job.summary[from] - 1);
  if (job.summary[to] !== undefined) job.summary[to] += 1;
}

function tail(item) {
  const list = $('#event-tail');
  const parts = [item.seq, item.type];
  if (item.index !== undefined) parts.push('file ' + item.index);
  if (item.code) parts.push(item.code);
  if (item.status) parts.push(item.status);
  list.appendChild(el('li', parts.join(' ')));
  while (list.children.length > 50) list.removeChild(list.firstChild);
}

function onJobItem(job, item) {
  if (item.type === 'snapshot' && item.job) {
    Object.assign(job, item.job);
    renderJob(job);
    return undefined;
  }
  if (item.type === 'heartbeat' || typeof item.seq !== 'number') return undefined;
  tail(item);
  const f = job.files[item.index];
  const progressed = job.progressed || (job.progressed = new Map());
  const moveBytes = (bytes) => {
    const before = progressed.has(item.index) ? progressed.get(item.index) : (f ? f.bytes_done : 0);
    progressed.set(item.index, bytes);
    job.summary.bytes_done = Math.max(0, job.summary.bytes_done + bytes - before);
  };
  switch (item.type) {
    case 'file_started':
      moveFile(job, item, 'running');
      moveBytes(0);
      if (f) { f.status = 'running'; f.attempts = item.attempt; f.retrying = false; f.error = null; f.bytes_done = 0; }
      break;
    case 'file_progress':
      moveBytes(item.bytes_done);
      if (f) {
        noteRate(fileRates, item.index, item.bytes_done, 0, 0.2);
        f.bytes_done = item.bytes_done;
        if (item.total) f.total = item.total;
      }
      break;
    case 'file_succeeded':
    case 'file_skipped': {
      const to = item.type === 'file_succeeded' ? 'succeeded' : 'skipped';
      moveFile(job, item, to);
      moveBytes(item.bytes);
      if (f) { f.status = to; f.bytes_done = item.bytes; f.total = item.bytes; }
      break;
    }
    case 'file_failed':
      if (!item.will_retry) moveFile(job, item, 'failed');
      if (f) {
        f.error = { code: item.code, message: item.message };
        if (item.will_retry) { f.retrying = true; } else { f.status = 'failed'; }
      }
      break;
    case 'job_completed':
      job.status = item.status;
      job.summary = item.summary;
      break;
    case 'job_cancelled':
      job.status = 'cancelled';
      job.files.forEach((x) => { if (x.status === 'queued' || x.status === 'running') x.status = 'cancelled'; });
      break;
    default:
      break;
  }
  renderJob(job);
  return item.type === 'job_completed' || item.type === 'job_cancelled' ? 'end' : undefined;
}

async function jobView(id) {
  show('#job-view');
  fileRates.clear();
  $('#event-tail').replaceChildren();
  let job;
  try {
    job = await api('GET', '/v1/jobs/' + encodeURIComponent(id));
  } catch (e) {
    if (e instanceof AuthNeeded) return;
    $('#job-title').textContent = e.status === 404 ? 'No job ' + id : e.message;
    $('#job-facts').replaceChildren();
    $('#files-table tbody').replaceChildren();
    $('#cancel-button').hidden = true;
    return;
  }
  $('#more-files').onclick = () => moreFiles(job).catch((e) => {
    if (!(e instanceof AuthNeeded)) setConn(e.message);
  });
  renderJob(job);
  if (TERMINAL_JOB.includes(job.status)) return;
  state.follows.push(new Follow('/v1/jobs/' + encodeURIComponent(id) + '/events',
    (item) => onJobItem(job, item), true));
  $('#cancel-button').onclick = () => {
    const dialog = $('#confirm');
    dialog.returnValue = '';
    dialog.onclose = async () => {
      if (dialog.returnValue !== 'yes') return;
      try { await api('DELETE', '/v1/jobs/' + encodeURIComponent(id)); } catch (e) {
        if (!(e instanceof AuthNeeded)) setConn(e.message);
      }
    };
    dialog.showModal();
  };
}

// ---- submit -------------------------------------------------------------

// The list format of `ferry job submit --files-from`: URL [KEY [SHA256]].
function parseList(text) {
  const files = [];
  const lines = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const [source, key, sha256] = line.split(/\s+/);
    let name = key && key !== '-' ? key : null;
    if (!name) {
      try { name = decodeURIComponent(new URL(source).pathname.split('/').pop()); } catch (_) { name = ''; }
    }
    if (!name) throw Object.assign(new Error('line ' + (i + 1) + ': the URL has no file name: give a KEY'), { line: i + 1 });
    const file = { source, key: name };
    if (sha256) file.sha256 = sha256;
    files.push(file);
    lines.push(i + 1);
  });
  return { files, lines };
}

function clearErrors() {
  document.querySelectorAll('.field-error, #submit-error').forEach((e) => { e.textContent = ''; });
  document.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
}

function fieldError(target, input, message) {
  target.textContent = message;
  if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
}

async function submitJob(event) {
  event.preventDefault();
  clearErrors();
  const mode = new FormData($('#submit-form')).get('mode');
  let body;
  let lines = [];
  if (mode === 'json') {
    try { body = JSON.parse($('#job-json').value); } catch (e) {
      fieldError($('#json-error'), $('#job-json'), 'not valid JSON: ' + e.message);
      return;
    }
  } else {
    try {
      const parsed = parseList($('#urls').value);
      lines = parsed.lines;
      body = { destination: $('#destination').value.trim(), files: parsed.files };
    } catch (e) {
      fieldError($('#urls-error'), $('#urls'), e.message);
      return;
    }
  }
  try {
    const job = await api('POST', '/v1/jobs', body);
    location.hash = '#/jobs/' + encodeURIComponent(job.id);
  } catch (e) {
    if (e instanceof AuthNeeded) return;
    const field = e.field || '';
    if (mode === 'json') {
      fieldError($('#json-error'), $('#job-json'), (field ? field + ': ' : '') + e.message);
    } else if (field === 'destination') {
      fieldError($('#destination-error'), $('#destination'), e.message);
    } else if (field.startsWith('files')) {
      const m = /^files\[(\d+)\]\.?(.*)$/.exec(field);
      const where = m ? 'line ' + lines[Number(m[1])] + (m[2] ? ' (' + m[2] + ')' : '') + ': ' : '';
      fieldError($('#urls-error'), $('#urls'), where + e.message);
    } else {
      $('#submit-error').textContent = (field ? field + ': ' : '') + e.message;
    }
  }
}

// ---- routing --------------------------------------------------------------

function route() {
  stopFollows();
  const hash = location.hash || '#/';
  const job = /^#\/jobs\/(.+)$/.exec(hash);
  if (job) { jobView(decodeURIComponent(job[1])); } else if (hash === '#/submit') {
    show('#submit-view');
  } else { jobsView(); }
  $('#main').focus({ preventScroll: true });
}

document.addEventListener('DOMContentLoaded', () => {
  $('#token-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    state.token = $('#token-input').value.trim();
    try {
      await api('GET', '/v1/jobs?limit=1');
      sessionStorage.setItem(TOKEN_KEY, state.token);
      $('#token-input').value = '';
      route();
    } catch (e) {
      if (!(e instanceof AuthNeeded)) $('#token-error').textContent = e.message;
    }
  });
  $('#status-filter').addEventListener('change', renderJobs);
  $('#submit-form').addEventListener('submit', submitJob);
  document.querySelectorAll('input[name=mode]').forEach((r) => r.addEventListener('change', () => {
    const json = new FormData($('#submit-form')).get('mode') === 'json';
    $('#json-fields').hidden = !json;
    $('#list-fields').hidden = json;
  }));
  window.addEventListener('hashchange', route);
  route();
});
