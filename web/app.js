// ctrack's connection page. Plain script, no libraries. Every string from
// the server goes into the page through textContent (never innerHTML), so
// a host name like "<img src=x onerror=...>" shows as text.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const KEYS = ['proto', 'port', 'sport', 'dport', 'host', 'src', 'dst', 'state', 'status', 'mark', 'zone', 'nat', 'family', 'id'];
  const SORTS = ['proto', 'state', 'src', 'dst', 'nat', 'bytes', 'packets', 'bytes_orig', 'bytes_reply',
    'packets_orig', 'packets_reply', 'rate', 'rate_orig', 'rate_reply', 'age', 'timeout', 'mark', 'zone', 'id', 'family',
    'sport', 'dport'];
  const st = {
    view: 'flows', sort: '-bytes', offset: 0, size: 100, text: '',
    paused: false, every: 2000, busy: false, timer: 0, hostSort: ['up_bytes', true], hosts: [],
    token: sessionStorage.getItem('ctrack-token') || '', matched: 0,
  };

  // ---- formatting ----
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  function bytes(n) {
    if (n == null) return '–';
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }
  const rate = (n) => (n == null ? '–' : bytes(n) + '/s');
  const nf = new Intl.NumberFormat();
  const num = (n) => (n == null ? '–' : nf.format(n));
  function dur(s) {
    if (s == null) return '–';
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h' + String(Math.floor(s / 60) % 60).padStart(2, '0') + 'm';
    return Math.floor(s / 86400) + 'd' + String(Math.floor(s / 3600) % 24).padStart(2, '0') + 'h';
  }
  function ep(addr, port, v6) {
    if (port == null) return addr;
    return (v6 ? '[' + addr + ']' : addr) + ':' + port;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // ---- the filter box: key:value words become parameters, the other
  // words go to q, where all of them must match ----
  function params() {
    const p = new URLSearchParams();
    const free = [];
    for (const w of st.text.trim().split(/\s+/)) {
      if (!w) continue;
      const m = /^([a-z]+)[:=](.+)$/.exec(w);
      if (m && KEYS.includes(m[1])) p.set(m[1], m[2]); else free.push(w);
    }
    if (free.length) p.set('q', free.join(' '));
    return p;
  }

  // ---- errors, status and what a screen reader hears ----
  function showError(msg) {
    const e = $('error');
    e.hidden = !msg;
    e.textContent = msg || '';
    $('status').classList.toggle('err', !!msg);
  }
  function setStatus(text) { $('status').textContent = text; }
  // only changes a person should hear: errors, pause, the event mode, kills
  let said = '';
  function announce(text) {
    if (text === said) return;
    said = text;
    $('announce').textContent = text;
  }

  // ---- requests: the token (if any) on every one; a 401 asks for it ----
  function headers() {
    return st.token ? { Authorization: 'Bearer ' + st.token } : {};
  }
  let asking = null;
  function askToken() {
    if (asking) return asking;
    const d = $('login');
    asking = new Promise((resolve) => {
      d.addEventListener('close', () => {
        const t = $('login-token').value.trim();
        if (t) { st.token = t; sessionStorage.setItem('ctrack-token', t); }
        asking = null;
        resolve();
      }, { once: true });
      d.showModal();
    });
    return asking;
  }
  async function getJSON(url) {
    for (let tries = 0; ; tries++) {
      const r = await fetch(url, { cache: 'no-store', headers: headers() });
      if (r.status === 401 && tries < 3) { await askToken(); continue; }
      let body;
      try { body = await r.json(); } catch (e) { body = null; }
      if (!r.ok) throw new Error((body && body.error) || ('HTTP ' + r.status));
      return body;
    }
  }

  // ---- rows updated in place: a pool of <tr>, text set only when changed ----
  function setText(td, text, title) {
    if (td._t !== text) { td._t = text; td.textContent = text; }
    if (title !== undefined && td.title !== title) td.title = title;
  }
  function cell(tr, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  // an endpoint cell: optional bold name, then the address (both text nodes)
  function endpointCell(tr) {
    const td = cell(tr, 'addr');
    td._name = document.createElement('span');
    td._name.className = 'name';
    td._name.hidden = true;
    td._addr = document.createElement('span');
    td.append(td._name, td._addr);
    return td;
  }
  function setEndpoint(td, name, text) {
    if (td._name._t !== name) { td._name._t = name; td._name.textContent = name || ''; td._name.hidden = !name; }
    if (td._addr._t !== text) {
      td._addr._t = text; td._addr.textContent = text; td._addr.className = name ? 'dim' : '';
    }
  }

  function describe(f) {
    const o = f.orig || {}, v6 = f.layer3 === 'ipv6';
    return (f.layer4 || '') + ' ' + ep(o.src, o.sport, v6) + ' → ' + ep(o.dst, o.dport, v6);
  }

  function flowRow() {
    const tr = document.createElement('tr');
    tr._c = {
      proto: cell(tr, 'proto'), state: cell(tr, 'state'), src: endpointCell(tr), dst: endpointCell(tr),
      nat: cell(tr, 'nat'), ob: cell(tr, 'num'), op: cell(tr, 'num opt'), rb: cell(tr, 'num'),
      rp: cell(tr, 'num opt'), ro: cell(tr, 'num opt'), rr: cell(tr, 'num opt'),
      age: cell(tr, 'num opt'), to: cell(tr, 'num opt'), act: cell(tr, 'act'),
    };
    tr._c.nat._b = document.createElement('b');
    tr._c.nat._s = document.createElement('span');
    tr._c.nat.append(tr._c.nat._b, tr._c.nat._s);
    const kill = document.createElement('button');
    kill.type = 'button';
    kill.className = 'kill';
    kill.textContent = '✕';
    kill.addEventListener('click', (e) => {
      e.stopPropagation();
      const f = tr._f;
      if (f) killOne(f);
    });
    tr._c.act.appendChild(kill);
    tr._kill = kill;
    return tr;
  }

  function fillFlow(tr, f) {
    tr._f = f;
    const c = tr._c;
    const o = f.orig || {}, r = f.reply || {}, names = f.names || {};
    const v6 = f.layer3 === 'ipv6';
    const l4 = f.layer4 === 'unknown' ? String(f.protonum) : f.layer4;
    setText(c.proto, l4);
    const pc = 'proto p-' + (['tcp', 'udp', 'icmp', 'icmpv6'].includes(f.layer4) ? f.layer4 : 'other');
    if (c.proto.className !== pc) c.proto.className = pc;
    let state = f.state || '';
    const status = f.status || [];
    if (!status.includes('SEEN_REPLY') && status.length) state = state ? state + ' · unreplied' : 'unreplied';
    if (status.includes('OFFLOAD')) state += (state ? ' · ' : '') + 'offload';
    setText(c.state, state || '—');
    const sport = o.sport != null ? o.sport : null, dport = o.dport != null ? o.dport : null;
    const icmp = o.type != null ? ' type ' + o.type : '';
    setEndpoint(c.src, names[o.src], ep(o.src, sport, v6));
    setEndpoint(c.dst, names[o.dst], ep(o.dst, dport, v6) + icmp);
    // NAT: what the reply tuple says the flow became
    let kind = '', to = '';
    if (f.nat === 'snat' || f.nat === 'both') { kind = 'SNAT'; to = ep(r.dst, r.dport, v6); }
    if (f.nat === 'dnat' || f.nat === 'both') {
      const d = ep(r.src, r.sport, v6) + (names[r.src] ? ' (' + names[r.src] + ')' : '');
      kind = kind ? 'SNAT+DNAT' : 'DNAT'; to = to ? to + ' · ' + d : d;
    }
    if (c.nat._b._t !== kind) { c.nat._b._t = kind; c.nat._b.textContent = kind; }
    if (c.nat._s._t !== to) { c.nat._s._t = to; c.nat._s.textContent = to || '—'; c.nat._s.className = to ? '' : 'dim'; }
    setText(c.ob, bytes(o.bytes));
    setText(c.op, num(o.packets));
    setText(c.rb, bytes(r.bytes));
    setText(c.rp, num(r.packets));
    setText(c.ro, rate(f.rate ? f.rate.orig : null));
    setText(c.rr, rate(f.rate ? f.rate.reply : null));
    setText(c.age, dur(f.age));
    setText(c.to, dur(f.timeout));
    const label = 'Kill ' + describe(f);
    if (tr._kill.getAttribute('aria-label') !== label) {
      tr._kill.setAttribute('aria-label', label);
      tr._kill.title = label;
    }
  }

  function render(tbody, items, make, fill) {
    const rows = tbody.rows;
    for (let i = 0; i < items.length; i++) {
      let tr = rows[i];
      if (!tr) { tr = make(); tbody.appendChild(tr); }
      fill(tr, items[i]);
    }
    while (rows.length > items.length) tbody.deleteRow(rows.length - 1);
  }

  function showAge(d) {
    const age = d.counters_age;
    $('c-age').textContent = age == null ? '–' : dur(age);
    $('age-chip').title = 'bytes, packets and rates come from a snapshot of the kernel\'s counters, taken at most every ' +
      (d.counter_interval || 0) + ' s while the page is open';
  }

  // ---- connections view ----
  async function loadFlows() {
    const p = params();
    if (st.sort) p.set('sort', st.sort);
    p.set('limit', st.size);
    p.set('offset', st.offset);
    const d = await getJSON('api/v1/connections?' + p.toString());
    if (d.matched > 0 && st.offset >= d.matched) {
      st.offset = Math.max(0, Math.floor((d.matched - 1) / st.size) * st.size);
      return loadFlows();
    }
    render($('flows').tBodies[0], d.items, flowRow, fillFlow);
    st.matched = d.matched;
    $('c-total').textContent = num(d.total);
    $('c-matched').textContent = num(d.matched);
    showAge(d);
    const a = d.matched ? st.offset + 1 : 0, b = st.offset + d.items.length;
    $('range').textContent = num(a) + '–' + num(b) + ' of ' + num(d.matched);
    $('prev').disabled = st.offset === 0;
    $('next').disabled = b >= d.matched;
    $('kill-matching').disabled = !params().toString() || !d.matched;
  }

  // ---- hosts view (sorted here: at most a few thousand rows) ----
  function hostRow() {
    const tr = document.createElement('tr');
    const first = cell(tr, 'addr');
    // a button, so the row is reachable and usable by keyboard
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'linkish';
    first.appendChild(open);
    first._name = document.createElement('span');
    first._name.className = 'name';
    first._addr = document.createElement('span');
    open.append(first._name, first._addr);
    tr._c = { host: first, flows: cell(tr, 'num'), ub: cell(tr, 'num'), up: cell(tr, 'num opt'), ur: cell(tr, 'num opt'),
      db: cell(tr, 'num'), dp: cell(tr, 'num opt'), dr: cell(tr, 'num opt') };
    tr.addEventListener('click', () => {
      // a named host: all its addresses by name; else its first address
      st.text = 'host:' + (tr._name && !/\s/.test(tr._name) ? tr._name : tr._addr);
      $('filter').value = st.text;
      st.offset = 0;
      show('flows');
    });
    return tr;
  }
  function fillHost(tr, h) {
    tr._addr = h.addr;
    tr._name = h.name;
    const c = tr._c;
    const more = (h.addrs || []).length > 1 ? ' +' + (h.addrs.length - 1) : '';
    setEndpoint(c.host, h.name, h.addr + more);
    c.host.title = (h.addrs || [h.addr]).join('\n') + (h.mac ? '\n' + h.mac : '');
    setText(c.flows, num(h.flows));
    setText(c.ub, bytes(h.up.bytes));
    setText(c.up, num(h.up.packets));
    setText(c.ur, rate(h.up.rate));
    setText(c.db, bytes(h.down.bytes));
    setText(c.dp, num(h.down.packets));
    setText(c.dr, rate(h.down.rate));
  }
  function hostValue(h, k) {
    if (k === 'name') return (h.name || '~' + h.addr).toLowerCase();
    if (k === 'flows') return h.flows;
    const [dir, what] = k.split('_');
    return h[dir][what];
  }
  function drawHosts() {
    const [k, desc] = st.hostSort;
    const list = st.hosts.slice().sort((a, b) => {
      const x = hostValue(a, k), y = hostValue(b, k);
      return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1);
    });
    render($('hosts').tBodies[0], list, hostRow, fillHost);
    for (const th of $('hosts').tHead.rows[0].cells) {
      th.setAttribute('aria-sort', th.dataset.key === k ? (desc ? 'descending' : 'ascending') : 'none');
    }
  }
  async function loadHosts() {
    const p = params();
    const d = await getJSON('api/v1/hosts?' + p.toString());
    st.hosts = d.hosts;
    const note = $('acct-note');
    note.hidden = d.acct !== false;
    note.textContent = d.note || '';
    $('c-total').textContent = num(d.total);
    $('c-matched').textContent = num(d.hosts.length) + ' hosts,';
    showAge(d);
    drawHosts();
  }

  // ---- refresh loop ----
  async function refresh() {
    clearTimeout(st.timer);
    if (st.busy) { st.again = true; return; }
    st.busy = true;
    const t0 = performance.now();
    try {
      await (st.view === 'flows' ? loadFlows() : loadHosts());
      showError('');
      setStatus(st.paused ? 'paused' : 'live · ' + Math.round(performance.now() - t0) + ' ms');
      // only a change of state is said: paused, resumed, recovered
      const state = st.paused ? 'paused' : 'live';
      if (state !== st.state) {
        if (st.state) announce(state === 'paused' ? 'Updates paused' : 'Updates live');
        st.state = state;
      }
      document.body.dataset.loaded = String((+document.body.dataset.loaded || 0) + 1);
    } catch (e) {
      const msg = String(e.message || e);
      showError(msg);
      setStatus('error');
      if (st.state !== 'error') announce('Error: ' + msg);
      st.state = 'error';
    } finally {
      st.busy = false;
      $('status').classList.toggle('paused', st.paused);
      if (st.again) { st.again = false; refresh(); }
      else if (!st.paused) st.timer = setTimeout(refresh, st.every);
    }
  }

  function drawSortHeads() {
    const key = st.sort.replace(/^-/, ''), desc = st.sort.startsWith('-');
    for (const th of $('flows').tHead.rows[0].cells) {
      if (!th.dataset.sort) continue;
      // "bytes" (both ways) is shown on both byte columns, "rate" on both rates
      const on = th.dataset.sort === key || ((key === 'bytes' || key === 'rate') && th.dataset.sort.startsWith(key + '_'));
      th.setAttribute('aria-sort', on ? (desc ? 'descending' : 'ascending') : 'none');
    }
    const sel = $('sortsel');
    if ([...sel.options].some((o) => o.value === st.sort)) sel.value = st.sort;
  }

  function show(view) {
    st.view = view;
    $('view-flows').hidden = view !== 'flows';
    $('view-hosts').hidden = view !== 'hosts';
    $('tab-flows').setAttribute('aria-selected', view === 'flows');
    $('tab-hosts').setAttribute('aria-selected', view === 'hosts');
    save();
    refresh();
  }

  // ---- state in the address bar's fragment, so a reload keeps the view;
  // anything odd there falls back to the defaults ----
  function save() {
    const h = new URLSearchParams({ v: st.view, s: st.sort, f: st.text, o: st.offset, n: st.size });
    history.replaceState(null, '', '#' + h.toString());
  }
  function restore() {
    const h = new URLSearchParams(location.hash.slice(1));
    if (h.get('v') === 'hosts') st.view = 'hosts';
    const s = h.get('s');
    if (s && SORTS.includes(s.replace(/^-/, ''))) st.sort = s;
    if (h.has('f')) st.text = h.get('f').slice(0, 256);
    const o = h.get('o'), n = parseInt(h.get('n'), 10);
    if (o && /^\d{1,7}$/.test(o)) st.offset = +o;
    if ([50, 100, 250, 500].includes(n)) st.size = n;
    $('filter').value = st.text;
    $('size').value = String(st.size);
  }

  // ---- killing: a confirmation, the admin token if needed ----
  function confirmKill(title, what, query) {
    const d = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-what').textContent = what;
    $('confirm-error').hidden = true;
    $('token-row').hidden = !!st.token;
    $('token').value = '';
    d.returnValue = '';
    const attempt = async () => {
      if (!$('token-row').hidden) {
        const t = $('token').value.trim();
        if (t) { st.token = t; sessionStorage.setItem('ctrack-token', t); }
      }
      const r = await fetch('api/v1/connections?' + query, { method: 'DELETE', headers: headers() });
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      return { r, body };
    };
    $('confirm-form').onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const { r, body } = await attempt();
        if (r.status === 401) {
          $('token-row').hidden = false;
          $('confirm-error').hidden = false;
          $('confirm-error').textContent = st.token ? 'That token was refused.' : 'The admin token is needed.';
          st.token = '';
          sessionStorage.removeItem('ctrack-token');
          $('token').focus();
          return;
        }
        if (!r.ok) {
          $('confirm-error').hidden = false;
          $('confirm-error').textContent = (body && body.error) || ('HTTP ' + r.status);
          return;
        }
        d.close();
        const n = body ? body.deleted : 0;
        announce('Killed ' + n + ' connection' + (n === 1 ? '' : 's'));
        setStatus('killed ' + n);
        refresh();
      } catch (e) {
        $('confirm-error').hidden = false;
        $('confirm-error').textContent = String(e.message || e);
      }
    };
    $('confirm-no').onclick = () => d.close();
    d.showModal();
    (st.token ? $('confirm-yes') : $('token')).focus();
  }
  function killOne(f) {
    const o = f.orig || {};
    const q = new URLSearchParams({ id: f.id, proto: f.protonum, src: o.src, dst: o.dst });
    if (o.sport != null) q.set('sport', o.sport);
    if (o.dport != null) q.set('dport', o.dport);
    confirmKill('Kill this connection?', describe(f), q.toString());
  }
  function killMatching() {
    const p = params();
    if (!p.toString()) return;
    confirmKill('Kill ' + num(st.matched) + ' connections?', 'Every connection matching “' + st.text.trim() + '”.', p.toString());
  }

  // ---- CSV of the flows the filter selects, in the current order ----
  async function exportCsv() {
    const p = params();
    if (st.sort) p.set('sort', st.sort);
    p.set('format', 'csv');
    try {
      const r = await fetch('api/v1/connections?' + p.toString(), { cache: 'no-store', headers: headers() });
      if (!r.ok) throw new Error('HTTP ' + r.status);
      const url = URL.createObjectURL(await r.blob());
      const a = document.createElement('a');
      a.href = url;
      a.download = 'connections.csv';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      showError('export failed: ' + (e.message || e));
    }
  }

  // ---- live event counts: the event stream, or polling when it fails ----
  let nNew = 0, nGone = 0;
  function setEventMode(mode) {
    const note = $('ev-note');
    note.hidden = mode === 'stream';
    note.textContent = mode === 'poll'
      ? 'The live event stream is not available (the server may be busy): new/gone counts are polled every 5 s.'
      : '';
    document.body.dataset.events = mode;
    if (mode === 'poll') announce('Live event stream unavailable, counts are polled');
  }
  async function stream() {
    const r = await fetch('api/v1/events', { cache: 'no-store', headers: headers() });
    if (r.status === 401) { await askToken(); return false; }
    if (!r.ok || !r.body) return false;
    setEventMode('stream');
    const rd = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await rd.read();
      if (done) return true;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const m = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (m.indexOf('"event":"new"') >= 0) nNew++;
        else if (m.indexOf('"event":"destroy"') >= 0) nGone++;
      }
    }
  }
  async function poll(ms) {
    let last = null;
    const end = Date.now() + ms;
    while (Date.now() < end) {
      try {
        const s = await getJSON('api/v1/stats');
        const w = s.web || {};
        const now = Date.now();
        if (last) {
          const secs = Math.max(1, (now - last.t) / 1000);
          $('c-new').textContent = num(Math.round((w.events_new - last.n) / secs));
          $('c-destroy').textContent = num(Math.round((w.events_destroyed - last.d) / secs));
        }
        last = { t: now, n: w.events_new, d: w.events_destroyed };
      } catch (e) { /* the error box shows the list's failures */ }
      await sleep(5000);
    }
  }
  async function liveCounts() {
    setInterval(() => {
      if (document.body.dataset.events !== 'stream') return;
      $('c-new').textContent = num(nNew);
      $('c-destroy').textContent = num(nGone);
      nNew = 0; nGone = 0;
    }, 1000);
    let fails = 0;
    for (;;) {
      let ok = false;
      try { ok = await stream(); } catch (e) { ok = false; }
      fails = ok ? 0 : fails + 1;
      if (fails >= 2) { setEventMode('poll'); await poll(30000); fails = 1; } else await sleep(1000);
    }
  }

  // ---- wiring ----
  function init() {
    restore();
    for (const th of $('flows').tHead.rows[0].cells) {
      if (!th.dataset.sort) continue;
      th.addEventListener('click', () => {
        const k = th.dataset.sort;
        const numeric = !['proto', 'state', 'src', 'dst', 'nat'].includes(k);
        if (st.sort === k) st.sort = '-' + k;
        else if (st.sort === '-' + k) st.sort = k;
        else st.sort = numeric ? '-' + k : k;
        st.offset = 0;
        drawSortHeads();
        save();
        refresh();
      });
    }
    for (const th of $('hosts').tHead.rows[0].cells) {
      th.addEventListener('click', () => {
        const k = th.dataset.key;
        st.hostSort = st.hostSort[0] === k ? [k, !st.hostSort[1]] : [k, k !== 'name'];
        drawHosts();
      });
    }
    let deb = 0;
    $('filter').addEventListener('input', () => {
      clearTimeout(deb);
      deb = setTimeout(() => { st.text = $('filter').value; st.offset = 0; save(); refresh(); }, 250);
    });
    $('pause').addEventListener('click', () => {
      st.paused = !st.paused;
      $('pause').setAttribute('aria-pressed', st.paused);
      $('pause').textContent = st.paused ? 'Resume' : 'Pause';
      refresh();
    });
    $('every').addEventListener('change', () => { st.every = +$('every').value; refresh(); });
    $('sortsel').addEventListener('change', () => {
      st.sort = $('sortsel').value; st.offset = 0; drawSortHeads(); save(); refresh();
    });
    $('size').addEventListener('change', () => { st.size = +$('size').value; st.offset = 0; save(); refresh(); });
    $('prev').addEventListener('click', () => { st.offset = Math.max(0, st.offset - st.size); save(); refresh(); });
    $('next').addEventListener('click', () => { st.offset += st.size; save(); refresh(); });
    $('tab-flows').addEventListener('click', () => show('flows'));
    $('tab-hosts').addEventListener('click', () => show('hosts'));
    $('export').addEventListener('click', exportCsv);
    $('kill-matching').addEventListener('click', killMatching);
    drawSortHeads();
    liveCounts();
    show(st.view);
  }
  init();
})();
