// ctrack's connection page. Plain script, no libraries. Every string from
// the server goes into the page through textContent (never innerHTML), so
// a host name like "<img src=x onerror=...>" shows as text.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const KEYS = ['proto', 'port', 'host', 'src', 'dst', 'state', 'status', 'mark', 'zone', 'nat', 'family'];
  const st = {
    view: 'flows', sort: '-bytes', offset: 0, size: 100, text: '',
    paused: false, every: 2000, busy: false, timer: 0, hostSort: ['up_bytes', true], hosts: [],
  };

  // ---- formatting ----
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  function bytes(n) {
    if (n == null) return '–';
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }
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

  // ---- the filter box: key:value words become parameters, the rest is q ----
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

  // ---- errors and status ----
  function showError(msg) {
    const e = $('error');
    e.hidden = !msg;
    e.textContent = msg || '';
    $('status').classList.toggle('err', !!msg);
  }
  function setStatus(text) { $('status').textContent = text; }

  async function getJSON(url) {
    const r = await fetch(url, { cache: 'no-store' });
    let body;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) throw new Error((body && body.error) || ('HTTP ' + r.status));
    return body;
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

  function flowRow() {
    const tr = document.createElement('tr');
    tr._c = {
      proto: cell(tr, 'proto'), state: cell(tr, 'state'), src: endpointCell(tr), dst: endpointCell(tr),
      nat: cell(tr, 'nat'), ob: cell(tr, 'num'), op: cell(tr, 'num opt'), rb: cell(tr, 'num'),
      rp: cell(tr, 'num opt'), age: cell(tr, 'num opt'), to: cell(tr, 'num opt'),
    };
    tr._c.nat._b = document.createElement('b');
    tr._c.nat._s = document.createElement('span');
    tr._c.nat.append(tr._c.nat._b, tr._c.nat._s);
    return tr;
  }

  function fillFlow(tr, f) {
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
    setText(c.age, dur(f.age));
    setText(c.to, dur(f.timeout));
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

  // ---- connections view ----
  async function loadFlows() {
    const p = params();
    if (st.sort) p.set('sort', st.sort);
    p.set('limit', st.size);
    p.set('offset', st.offset);
    const d = await getJSON('/api/v1/connections?' + p.toString());
    if (d.matched > 0 && st.offset >= d.matched) {
      st.offset = Math.max(0, Math.floor((d.matched - 1) / st.size) * st.size);
      return loadFlows();
    }
    render($('flows').tBodies[0], d.items, flowRow, fillFlow);
    $('c-total').textContent = num(d.total);
    $('c-matched').textContent = num(d.matched);
    const a = d.matched ? st.offset + 1 : 0, b = st.offset + d.items.length;
    $('range').textContent = num(a) + '–' + num(b) + ' of ' + num(d.matched);
    $('prev').disabled = st.offset === 0;
    $('next').disabled = b >= d.matched;
  }

  // ---- hosts view (sorted here: at most a few thousand rows) ----
  function hostRow() {
    const tr = document.createElement('tr');
    tr._c = { host: endpointCell(tr), flows: cell(tr, 'num'), ub: cell(tr, 'num'), up: cell(tr, 'num opt'),
      db: cell(tr, 'num'), dp: cell(tr, 'num opt') };
    tr.addEventListener('click', () => {
      st.text = 'host:' + tr._addr;
      $('filter').value = st.text;
      st.offset = 0;
      show('flows');
    });
    return tr;
  }
  function fillHost(tr, h) {
    tr._addr = h.addr;
    const c = tr._c;
    setEndpoint(c.host, h.name, h.addr);
    setText(c.flows, num(h.flows));
    setText(c.ub, bytes(h.up.bytes));
    setText(c.up, num(h.up.packets));
    setText(c.db, bytes(h.down.bytes));
    setText(c.dp, num(h.down.packets));
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
    const d = await getJSON('/api/v1/hosts?' + p.toString());
    st.hosts = d.hosts;
    const note = $('acct-note');
    note.hidden = d.acct !== false;
    note.textContent = d.note || '';
    $('c-total').textContent = num(d.total);
    $('c-matched').textContent = num(d.hosts.length) + ' hosts,';
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
      document.body.dataset.loaded = String((+document.body.dataset.loaded || 0) + 1);
    } catch (e) {
      showError(String(e.message || e));
      setStatus('error');
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
      // "bytes" (both ways) is shown on both byte columns
      const on = th.dataset.sort === key || (key === 'bytes' && th.dataset.sort.startsWith('bytes_'));
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

  // ---- state in the address bar's fragment, so a reload keeps the view ----
  function save() {
    const h = new URLSearchParams({ v: st.view, s: st.sort, f: st.text, o: st.offset, n: st.size });
    history.replaceState(null, '', '#' + h.toString());
  }
  function restore() {
    const h = new URLSearchParams(location.hash.slice(1));
    if (h.get('v') === 'hosts') st.view = 'hosts';
    if (h.has('s')) st.sort = h.get('s');
    if (h.has('f')) st.text = h.get('f');
    const o = parseInt(h.get('o'), 10), n = parseInt(h.get('n'), 10);
    if (o >= 0) st.offset = o;
    if ([50, 100, 250, 500].includes(n)) st.size = n;
    $('filter').value = st.text;
    $('size').value = String(st.size);
  }

  // ---- live event counts from the server-sent event stream ----
  function liveCounts() {
    if (!window.EventSource) return;
    let n = 0, d = 0;
    const es = new EventSource('/api/v1/events');
    es.onmessage = (m) => {
      if (m.data.indexOf('"event":"new"') >= 0) n++;
      else if (m.data.indexOf('"event":"destroy"') >= 0) d++;
    };
    setInterval(() => {
      $('c-new').textContent = num(n);
      $('c-destroy').textContent = num(d);
      n = 0; d = 0;
    }, 1000);
  }

  // ---- wiring ----
  function init() {
    restore();
    for (const th of $('flows').tHead.rows[0].cells) {
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
    drawSortHeads();
    liveCounts();
    show(st.view);
  }
  init();
})();
