// edged's status page: renders each snapshot (status.json, sent as
// server-sent events on "events") into the tables. No framework; every
// value goes in as text (textContent), never as markup.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'title') e.title = v;
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const k of kids) {
      if (k === undefined || k === null || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }

  // --- formatting -------------------------------------------------------

  function num(v, digits) {
    if (!isFinite(v)) return '–';
    if (digits === undefined) digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
    return v.toLocaleString('en-US', { minimumFractionDigits: 0, maximumFractionDigits: digits });
  }
  function int(v) { return isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–'; }
  function pct(v) { return isFinite(v) ? (v * 100 >= 10 ? num(v * 100, 0) : num(v * 100, 1)) + '%' : '–'; }
  function msText(v) {
    if (!v) return '–';
    if (v >= 1000) return num(v / 1000, 2) + ' s';
    return num(v, v < 10 ? 2 : 0) + ' ms';
  }
  function bytes(v) {
    if (!isFinite(v) || v <= 0) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return num(v, v >= 100 || i === 0 ? 0 : 1) + ' ' + u[i];
  }
  function dur(sec) {
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return sec + 's';
    if (sec < 3600) return Math.floor(sec / 60) + 'm ' + (sec % 60) + 's';
    if (sec < 86400) return Math.floor(sec / 3600) + 'h ' + Math.floor(sec % 3600 / 60) + 'm';
    return Math.floor(sec / 86400) + 'd ' + Math.floor(sec % 86400 / 3600) + 'h';
  }
  function t(s) { return s ? new Date(s) : null; }
  function ago(s, now) {
    const d = t(s);
    return d ? dur((now - d) / 1000) + ' ago' : '–';
  }
  function clock(s) {
    const d = t(s);
    return d ? d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '–';
  }
  function day(s) {
    const d = t(s);
    return d ? d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' }) : '–';
  }

  // --- small pieces ------------------------------------------------------

  // spark draws a series as an SVG line over its filled area, scaled to
  // its own maximum (or to floor, so a quiet route stays flat).
  function spark(values, cls, floor, title) {
    const w = 100, h = 24;
    const s = document.createElementNS(SVG, 'svg');
    s.setAttribute('class', 'spark' + (cls ? ' ' + cls : ''));
    s.setAttribute('viewBox', `0 0 ${w} ${h}`);
    s.setAttribute('preserveAspectRatio', 'none');
    s.setAttribute('role', 'img');
    if (title) {
      s.setAttribute('aria-label', title);
      const tt = document.createElementNS(SVG, 'title');
      tt.textContent = title;
      s.append(tt);
    }
    values = values || [];
    if (values.length < 2) return s;
    const max = Math.max(floor || 0, ...values);
    const step = w / (values.length - 1);
    const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (max > 0 ? v / max : 0) * (h - 3)).toFixed(1)}`);
    const area = document.createElementNS(SVG, 'polygon');
    area.setAttribute('points', `0,${h} ${pts.join(' ')} ${w},${h}`);
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', pts.join(' '));
    s.append(area, line);
    return s;
  }

  function badge(text, kind) { return el('span', { class: 'badge ' + kind }, text); }

  function bar(used, max) {
    const b = el('div', { class: 'bar' }, el('span'));
    const f = max > 0 ? Math.min(1, used / max) : 0;
    b.firstChild.style.width = (f * 100).toFixed(1) + '%';
    if (f >= 0.9) b.classList.add('full');
    else if (f >= 0.75) b.classList.add('high');
    return b;
  }

  function card(label, value, sub, bad) {
    return el('div', { class: 'card' + (bad ? ' bad' : '') },
      el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), el('div', { class: 'sub', title: sub || '' }, sub || '\u00a0'));
  }

  function fill(tbody, rows, cols, empty) {
    tbody.replaceChildren(...(rows.length ? rows : [el('tr', null, el('td', { class: 'empty', colspan: cols }, empty))]));
  }

  // --- sections ----------------------------------------------------------

  function renderSummary(s, now) {
    const e = s.edged, cards = [];
    if (e) {
      let rate = 0, errs = 0;
      for (const site of e.sites || []) for (const r of site.routes || []) { rate += r.rate; errs += r.rate * r.error_rate; }
      const conns = Object.values(e.connections || {}).reduce((a, b) => a + b, 0);
      const servers = (e.upstreams || []).flatMap((u) => u.servers || []);
      const down = servers.filter((x) => x.state === 'down').length;
      const certAlarms = (e.certificates || []).filter((c) => c.alarm).length;
      const lr = e.last_reload;
      cards.push(card('Requests/s', num(rate), '5xx: ' + (rate ? pct(errs / rate) : '–'), rate > 0 && errs / rate >= 0.05));
      cards.push(card('Connections', int(conns), Object.entries(e.connections || {}).map(([k, v]) => `${k} ${int(v)}`).join(', ')));
      cards.push(card('Upstream servers', `${servers.length - down}/${servers.length} up`, down ? `${down} down` : 'all up', down > 0));
      cards.push(card('Certificates', int((e.certificates || []).length), certAlarms ? `${certAlarms} need attention` : 'all fine', certAlarms > 0));
      cards.push(card('Configuration', 'gen ' + e.generation, 'loaded ' + ago(e.loaded_at, now)));
      cards.push(card('Last reload', !lr ? 'none' : lr.ok ? 'OK' : 'FAILED',
        !lr ? 'since start ' + ago(e.started, now) : (lr.ok ? ago(lr.at, now) : ago(lr.at, now) + ': ' + lr.error), lr && !lr.ok));
    }
    for (const a of s.apps || []) {
      const bad = !!a.error || a.ready < a.workers;
      cards.push(card('appd ' + a.name, a.error ? 'unreachable' : `${a.ready}/${a.workers} ready`, a.error || ('gen ' + a.generation), bad));
    }
    $('summary').replaceChildren(...cards);
  }

  function renderRoutes(e) {
    const rows = [];
    for (const site of e.sites || []) {
      rows.push(el('tr', { class: 'group' }, el('td', { colspan: 7 }, site.name,
        el('small', null, (site.hosts || []).join(', ') + (site.tls ? ' · https' : '')))));
      for (const r of site.routes || []) {
        const rateFloor = 1, errFloor = 0.2;
        rows.push(el('tr', { 'data-route': r.name },
          el('td', { class: 'mono' }, r.path),
          el('td', { class: 'opt small' }, r.handler),
          el('td', { class: 'num' }, el('div', { class: 'stat' }, spark(r.requests, '', rateFloor, 'requests/s, last 5 minutes'), num(r.rate))),
          el('td', { class: 'num' + (r.error_rate >= 0.05 ? ' err' : '') }, el('div', { class: 'stat' }, spark(r.errors, 'errors opt', errFloor, '5xx/s, last 5 minutes'), r.rate ? pct(r.error_rate) : '–')),
          el('td', { class: 'num opt' }, msText(r.p50_ms)),
          el('td', { class: 'num opt' }, msText(r.p90_ms)),
          el('td', { class: 'num' }, el('div', { class: 'stat' }, spark(r.p99s_ms, 'opt', 1, 'p99 latency, last 5 minutes'), msText(r.p99_ms)))));
      }
    }
    fill($('routes').tBodies[0], rows, 7, 'no sites');
  }

  function renderUpstreams(e, now) {
    const rows = [];
    for (const u of e.upstreams || []) {
      const down = (u.servers || []).filter((x) => x.state === 'down').length;
      rows.push(el('tr', { class: 'group', 'data-pool': u.name }, el('td', { colspan: 7 }, u.name,
        el('small', null, `${u.policy} · ${(u.servers || []).length - down}/${(u.servers || []).length} up`))));
      for (const x of u.servers || []) {
        const kind = x.state === 'down' ? 'bad' : x.state === 'backup' ? 'idle' : 'ok';
        const why = x.reason || x.last_change || '';
        rows.push(el('tr', { 'data-upstream': u.name, 'data-server': x.addr, 'data-state': x.state },
          el('td', { class: 'mono addr' }, x.addr, x.backup ? el('small', { class: 'small' }, ' backup') : null),
          el('td', null, badge(x.state, kind), x.since ? el('div', { class: 'small' }, ago(x.since, now)) : null),
          el('td', { class: 'why' + (x.state === 'down' ? ' err' : '') }, why),
          el('td', { class: 'num' }, int(x.active)),
          el('td', { class: 'num' }, int(x.fails)),
          el('td', { class: 'num opt' }, int(x.requests)),
          el('td', { class: 'opt small' }, x.last_check ? ago(x.last_check, now) : 'passive only')));
      }
    }
    fill($('upstreams').tBodies[0], rows, 7, 'no upstreams');
  }

  function renderCerts(e, now) {
    const rows = (e.certificates || []).map((c) => {
      const left = c.not_after ? (new Date(c.not_after) - now) / 86400000 : NaN;
      const state = c.state.startsWith('failed') ? 'failed' : c.state;
      const kind = c.alarm ? 'bad' : state === 'valid' ? 'ok' : 'warn';
      return el('tr', { 'data-cert': c.host, 'data-alarm': c.alarm ? 'true' : 'false', class: c.alarm ? 'alarm' : '' },
        el('td', { class: 'mono host' }, c.host, c.on_demand ? el('small', { class: 'small' }, ' on demand') : null),
        el('td', { class: 'opt' }, c.mode),
        el('td', { class: 'opt small' }, c.issuer || '–'),
        el('td', { class: 'expiry' }, c.not_after ? day(c.not_after) : '–',
          c.not_after ? el('div', { class: 'small' }, left < 0 ? 'expired' : 'in ' + dur(left * 86400)) : null),
        el('td', null, badge(state, kind), c.last_error ? el('div', { class: 'why err' }, c.last_error) : null));
    });
    fill($('certs').tBodies[0], rows, 5, 'no certificates (no TLS site)');
  }

  function renderCaches(e) {
    const rows = (e.caches || []).map((c) => el('tr', { 'data-cache': c.name },
      el('td', null, c.name),
      el('td', null, c.hits + c.misses ? pct(c.hit_ratio) : '–', bar(c.hit_ratio, 1)),
      el('td', { class: 'num opt' }, int(c.hits) + ' / ' + int(c.misses)),
      el('td', null, bytes(c.memory_bytes) + (c.memory_max ? ' / ' + bytes(c.memory_max) : ''), c.memory_max ? bar(c.memory_bytes, c.memory_max) : null),
      el('td', { class: 'opt' }, c.disk_max ? bytes(c.disk_bytes) + ' / ' + bytes(c.disk_max) : '–', c.disk_max ? bar(c.disk_bytes, c.disk_max) : null),
      el('td', { class: 'num opt' }, int(c.objects)),
      el('td', { class: 'num' }, int(c.evictions))));
    fill($('caches').tBodies[0], rows, 7, 'no caches');
  }

  function renderLimits(e) {
    const rows = (e.limits || []).map((z) => {
      const lim = [z.rate ? `${z.rate} burst ${z.burst}` : '', z.concurrent ? `${z.concurrent} at once` : ''].filter(Boolean).join(', ');
      return el('tr', { 'data-limit': z.name },
        el('td', null, z.name, z.dry_run ? el('small', { class: 'small' }, ' dry run') : null),
        el('td', { class: 'opt mono' }, z.key),
        el('td', null, lim),
        el('td', { class: 'num' }, int(z.keys) + ' / ' + int(z.max_keys)),
        el('td', { class: 'num' + (z.refused ? ' err' : '') }, int(z.refused)),
        el('td', { class: 'opt small mono' }, (z.busiest || []).slice(0, 5).map((k) => `${k.key} (${num(k.tokens, 1)} left, ${k.active} active)`).join(', ') || '–'));
    });
    fill($('limits').tBodies[0], rows, 6, 'no limit zones');
  }

  // CPU use is the change of each worker's CPU seconds between two
  // snapshots; cpuSeen remembers the last one by app and pid.
  let cpuSeen = new Map();

  function renderApps(s, now) {
    const seen = new Map();
    const boxes = (s.apps || []).map((a) => {
      const head = el('div', { class: 'head' }, el('span', { class: 'name' }, a.name));
      if (a.error) {
        head.append(badge('unreachable', 'bad'), el('span', { class: 'err' }, a.error));
        return el('div', { class: 'app', 'data-app': a.name }, head);
      }
      const lr = a.last_reload;
      head.append(
        badge(`${a.ready}/${a.workers} ready`, a.ready < a.workers ? 'bad' : 'ok'),
        el('span', null, 'generation ' + a.generation + (a.serving_generation && a.serving_generation !== a.generation ? ` (serving ${a.serving_generation})` : '')),
        lr ? el('span', null, 'last reload ', badge(lr.result.replace('_', ' '), lr.result === 'done' ? 'ok' : lr.result === 'started' ? 'warn' : 'bad'),
          ' ' + ago(lr.at, now) + (lr.detail ? ': ' + lr.detail : '')) : el('span', { class: 'small' }, 'no reload yet'),
        el('span', { class: 'small' }, 'pid ' + a.pid + (a.limited ? '' : ' · no cgroup limits')),
        a.message ? el('span', { class: 'msg small' }, a.message) : null);
      const rows = (a.workers_table || []).map((w) => {
        const key = a.name + '/' + w.pid;
        const prev = cpuSeen.get(key);
        let cpu = '–';
        if (w.pid && prev && now > prev.t) cpu = pct((w.cpu_seconds - prev.cpu) / ((now - prev.t) / 1000));
        if (w.pid) seen.set(key, { cpu: w.cpu_seconds, t: now });
        const kind = w.state === 'ready' ? 'ok' : w.state === 'starting' || w.state === 'draining' ? 'warn' : 'bad';
        return el('tr', { 'data-app': a.name, 'data-slot': w.slot, 'data-state': w.state, 'data-pid': w.pid || '' },
          el('td', { class: 'num' }, w.slot < 0 ? 'zygote' : w.slot),
          el('td', { class: 'num mono' }, w.pid || '–'),
          el('td', { class: 'num opt' }, w.generation || '–'),
          el('td', null, badge(w.state, kind), w.recycle ? el('div', { class: 'small' }, w.recycle) : null),
          el('td', null, bytes(w.memory_bytes) + (a.memory_max ? ' / ' + bytes(a.memory_max) : ''),
            a.memory_max && a.limited ? bar(w.memory_bytes, a.memory_max) : null,
            a.memory_max && !a.limited ? el('div', { class: 'small' }, 'limit not enforced') : null),
          el('td', { class: 'num' }, cpu, el('div', { class: 'small' }, num(w.cpu_seconds, 1) + ' s')),
          el('td', { class: 'num' }, int(w.restarts)),
          el('td', { class: 'num opt' }, w.pid ? dur(w.uptime_seconds) : '–'),
          el('td', { class: 'why' }, w.last_exit || '', w.status ? el('div', { class: 'small' }, w.status) : null));
      });
      const tbody = el('tbody');
      fill(tbody, rows, 9, 'no workers');
      const table = el('table', null,
        el('thead', null, el('tr', null, ...['Slot', 'PID', 'Gen', 'State', 'Memory', 'CPU', 'Restarts', 'Uptime', 'Last exit / status'].map((h, i) =>
          el('th', { class: i === 7 || i === 2 ? 'num opt' : (i <= 1 || i === 5 || i === 6) ? 'num' : '' }, h)))),
        tbody);
      return el('div', { class: 'app', 'data-app': a.name }, head, el('div', { class: 'scroll' }, table));
    });
    cpuSeen = seen;
    const box = $('apps');
    if (boxes.length) box.replaceChildren(...boxes);
    else box.replaceChildren(el('p', { class: 'small' }, 'No appd control socket found ([dashboard] appd in edged.toml).'));
  }

  let last = null;

  function render(s) {
    const now = Date.now();
    last = s;
    const e = s.edged;
    renderSummary(s, now);
    if (e) {
      $('host').textContent = e.host || '';
      document.title = 'edged status' + (e.host ? ' · ' + e.host : '');
      $('meta').textContent = `${e.version} · pid ${e.pid} · up ${dur((now - new Date(e.started)) / 1000)} · configuration generation ${e.generation}`;
      renderRoutes(e);
      renderUpstreams(e, now);
      renderCerts(e, now);
      renderCaches(e);
      renderLimits(e);
    }
    renderApps(s, now);
    $('footer').textContent = 'Snapshot of ' + clock(s.time) + '. Updates every second; nothing on this page changes anything.';
  }

  // --- connection ----------------------------------------------------------

  function setLive(state, text) {
    $('live').dataset.state = state;
    $('live-text').textContent = text;
  }
  function banner(text) {
    const b = $('banner');
    b.hidden = !text;
    b.textContent = text || '';
  }

  function onSnapshot(data) {
    let s;
    try {
      s = JSON.parse(data);
    } catch (err) {
      banner('The snapshot could not be read: ' + err.message);
      return;
    }
    banner('');
    setLive('live', 'live');
    render(s);
  }

  function poll() {
    fetch('status.json', { cache: 'no-store' })
      .then((r) => r.text().then((body) => {
        if (!r.ok) throw new Error(r.status + ' ' + body);
        onSnapshot(body);
      }))
      .catch((err) => { setLive('error', 'no answer'); banner('edged does not answer: ' + err.message); })
      .finally(() => setTimeout(poll, 1000));
  }

  function connect() {
    if (!window.EventSource) { poll(); return; }
    const es = new EventSource('events');
    es.onmessage = (ev) => onSnapshot(ev.data);
    es.addEventListener('failure', (ev) => {
      setLive('error', 'error');
      try { banner(JSON.parse(ev.data).error); } catch (_) { banner('the snapshot failed'); }
    });
    es.onerror = () => {
      setLive('error', 'reconnecting…');
      if (last) banner('Connection lost; showing the snapshot of ' + clock(last.time) + ' until edged answers again.');
    };
  }

  connect();
})();
