/*
 * The fleet view: tiles (fleetSummary), a table of assets paged by cursor, filters, asset
 * details with their events, and live updates through the assetUpdated subscription
 * (graphql-transport-ws). Plain JavaScript with no dependency, served from the same origin so
 * the page runs under script-src 'self'. Everything the server sends is put in the page with
 * textContent, never as HTML.
 */
(function () {
  'use strict';

  var TOKEN_KEY = 'oneprotect.fleet.token';
  var PAGE_SIZE = 50;
  var REFRESH_MS = 30000; // online state changes with time, not only with heartbeats

  var endpoint = document.body.getAttribute('data-endpoint') || '/query';
  var $ = function (id) { return document.getElementById(id); };

  var state = {
    token: '',
    siteId: '',
    search: '',
    cursors: [null], // the "after" of each page seen so far
    page: 0,
    pageInfo: null,
    rows: {},        // asset id -> tr
    selected: null,
    ws: null,
    wsRetry: 0,
    liveCount: 0
  };

  var ASSET_FIELDS = 'id hostname online lastSeenAt heartbeatCount ipAddresses os { name version } ' +
    'site { id name } agent { agentId status agentVersion }';

  var MESSAGES = {
    UNAUTHENTICATED: 'The token was refused: it is unknown, expired or revoked. Paste a valid API token (it starts with opu_).',
    FORBIDDEN: 'This token may not read the fleet: a user token with the VIEWER or ADMIN role is needed.',
    UNAVAILABLE: 'The server cannot reach its database right now; the view retries on its own.',
    AGENT_TOKEN: 'This is an agent or collector token; the fleet view needs a user token (VIEWER or ADMIN).',
    COMPLEXITY_LIMIT_EXCEEDED: 'The query was over the server\'s limits.'
  };

  // ---- GraphQL over HTTP ---------------------------------------------------------------

  function GQLError(code, message) {
    this.code = code;
    this.message = message;
  }

  function gql(query, variables) {
    return fetch(endpoint, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'Accept': 'application/graphql-response+json, application/json',
        'Authorization': 'Bearer ' + state.token
      },
      body: JSON.stringify({ query: query, variables: variables || {} }),
      credentials: 'omit',
      cache: 'no-store'
    }).then(function (resp) {
      return resp.json().catch(function () {
        throw new GQLError('HTTP_' + resp.status, 'The server answered HTTP ' + resp.status + '.');
      });
    }, function () {
      throw new GQLError('NETWORK', 'The server cannot be reached.');
    }).then(function (body) {
      if (body.errors && body.errors.length) {
        var e = body.errors[0];
        var code = (e.extensions && e.extensions.code) || 'ERROR';
        throw new GQLError(code, e.message || code);
      }
      return body.data;
    });
  }

  function explain(err) {
    if (err instanceof GQLError) {
      return MESSAGES[err.code] || (err.message + ' (' + err.code + ')');
    }
    return 'Something went wrong: ' + String(err && err.message || err);
  }

  function showError(err) {
    var box = $('error');
    box.textContent = typeof err === 'string' ? err : explain(err);
    box.hidden = false;
  }

  function clearError() {
    $('error').hidden = true;
    $('error').textContent = '';
  }

  // ---- small DOM helpers -----------------------------------------------------------------

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function ago(iso) {
    if (!iso) return '–';
    var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  function osText(os) {
    if (!os) return '–';
    return [os.name, os.version].filter(Boolean).join(' ') || '–';
  }

  function fillList(ul, items, label) {
    ul.textContent = '';
    if (!items.length) ul.appendChild(el('li', 'none', 'muted'));
    items.slice(0, 6).forEach(function (it) {
      var li = el('li');
      li.appendChild(el('span', label(it)));
      li.appendChild(el('b', it.count));
      ul.appendChild(li);
    });
  }

  // ---- tiles ---------------------------------------------------------------------------

  function loadSummary() {
    return gql('query($s: ID) { fleetSummary(siteId: $s) { totalAssets online offline ' +
      'identitiesByStatus { status count } byOsName { name count } byAgentVersion { name count } } }',
      { s: state.siteId || null }).then(function (d) {
      var f = d.fleetSummary;
      $('tile-total').textContent = f.totalAssets;
      $('tile-online').textContent = f.online;
      $('tile-offline').textContent = f.offline;
      fillList($('tile-status'), f.identitiesByStatus, function (x) { return x.status.toLowerCase(); });
      fillList($('tile-os'), f.byOsName, function (x) { return x.name || 'unknown'; });
      fillList($('tile-versions'), f.byAgentVersion, function (x) { return x.name || 'unknown'; });
    });
  }

  // After live updates, the tiles and the page are read again (at most every 2 s): an update
  // says an asset is online, but only the server knows when the others went offline.
  var refreshTimer2 = null;
  function refreshSoon() {
    if (refreshTimer2) return;
    refreshTimer2 = setTimeout(function () {
      refreshTimer2 = null;
      reload().catch(showError);
    }, 2000);
  }

  // "Last seen" cells tick between reloads.
  setInterval(function () {
    var cells = document.querySelectorAll('#rows td.c-seen');
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].title) cells[i].textContent = ago(cells[i].title);
    }
  }, 5000);

  // ---- the assets table ------------------------------------------------------------------

  function filter() {
    var f = {};
    if (state.siteId) f.siteId = state.siteId;
    if (state.search) f.hostnameContains = state.search;
    return f;
  }

  function loadAssets() {
    return gql('query($first: Int, $after: String, $f: AssetFilter) { assets(first: $first, after: $after, filter: $f) { ' +
      'totalCount pageInfo { hasNextPage endCursor } edges { node { ' + ASSET_FIELDS + ' } } } }',
      { first: PAGE_SIZE, after: state.cursors[state.page], f: filter() }).then(function (d) {
      var c = d.assets;
      state.pageInfo = c.pageInfo;
      state.rows = {};
      var body = $('rows');
      body.textContent = '';
      c.edges.forEach(function (e) { body.appendChild(row(e.node)); });
      $('empty').hidden = c.edges.length > 0;
      $('count').textContent = c.totalCount + (c.totalCount === 1 ? ' asset' : ' assets');
      $('page').textContent = 'page ' + (state.page + 1);
      $('prev').disabled = state.page === 0;
      $('next').disabled = !c.pageInfo.hasNextPage;
    });
  }

  function row(a) {
    var tr = el('tr');
    tr.tabIndex = 0;
    fillRow(tr, a);
    tr.addEventListener('click', function () { openDetails(tr.getAttribute('data-asset-id')); });
    tr.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter') openDetails(tr.getAttribute('data-asset-id'));
    });
    state.rows[a.id] = tr;
    return tr;
  }

  function fillRow(tr, a) {
    tr.setAttribute('data-asset-id', a.id);
    tr.setAttribute('data-hostname', a.hostname);
    tr.setAttribute('data-heartbeats', a.heartbeatCount);
    tr.textContent = '';
    var st = el('td', null, 'c-state');
    st.appendChild(el('span', a.online ? 'online' : 'offline', a.online ? 'dot on' : 'dot off'));
    tr.appendChild(st);
    tr.appendChild(el('td', a.hostname, 'c-host'));
    tr.appendChild(el('td', a.site ? a.site.name : '–', 'c-site'));
    tr.appendChild(el('td', osText(a.os), 'c-os'));
    tr.appendChild(el('td', (a.ipAddresses || []).join(', ') || '–', 'c-ip'));
    tr.appendChild(el('td', a.agent && a.agent.agentVersion || '–', 'c-ver'));
    var seen = el('td', ago(a.lastSeenAt), 'c-seen');
    seen.title = a.lastSeenAt || '';
    tr.appendChild(seen);
  }

  function matchesFilter(a) {
    if (state.siteId && (!a.site || a.site.id !== state.siteId)) return false;
    if (state.search && a.hostname.toLowerCase().indexOf(state.search.toLowerCase()) < 0) return false;
    return true;
  }

  function onAssetUpdated(a) {
    state.liveCount++;
    $('live').textContent = 'live · ' + state.liveCount + (state.liveCount === 1 ? ' update' : ' updates');
    var tr = state.rows[a.id];
    if (tr) {
      fillRow(tr, a);
      tr.classList.remove('flash');
      void tr.offsetWidth; // restart the highlight
      tr.classList.add('flash');
    } else if (state.pageInfo && !state.pageInfo.hasNextPage && matchesFilter(a) &&
               Object.keys(state.rows).length < PAGE_SIZE) {
      // Assets are listed in creation order: a new one belongs at the end of the last page.
      var nr = row(a);
      $('rows').appendChild(nr);
      $('empty').hidden = true;
      nr.classList.add('flash');
    }
    if (state.selected === a.id) openDetails(a.id);
    refreshSoon();
  }

  // ---- details -------------------------------------------------------------------------

  function openDetails(id) {
    state.selected = id;
    gql('query($id: ID!) { asset(id: $id) { id hostname online firstSeenAt lastSeenAt heartbeatCount ' +
      'ipAddresses macAddresses cpuCount memoryBytes uptimeSeconds facts os { name version kernel arch } ' +
      'site { name } agent { agentId status agentVersion enrolledAt collector { name } } ' +
      'events(first: 20) { edges { node { type occurredAt payload } } } } }', { id: id }).then(function (d) {
      var a = d.asset;
      if (!a || state.selected !== id) return;
      $('d-title').textContent = a.hostname;
      var dl = $('d-fields');
      dl.textContent = '';
      var add = function (k, v) {
        dl.appendChild(el('dt', k));
        dl.appendChild(el('dd', v === null || v === undefined || v === '' ? '–' : v));
      };
      add('State', a.online ? 'online' : 'offline');
      add('Asset id', a.id);
      add('Site', a.site && a.site.name);
      add('Operating system', a.os && [a.os.name, a.os.version, a.os.kernel, a.os.arch].filter(Boolean).join(' · '));
      add('IP addresses', (a.ipAddresses || []).join(', '));
      add('MAC addresses', (a.macAddresses || []).join(', '));
      add('CPUs', a.cpuCount);
      add('Memory', a.memoryBytes ? (a.memoryBytes / 1073741824).toFixed(1) + ' GiB' : null);
      add('Uptime', a.uptimeSeconds ? Math.round(a.uptimeSeconds / 3600) + ' h' : null);
      add('Agent', a.agent && [a.agent.agentId, a.agent.status.toLowerCase(), a.agent.agentVersion].filter(Boolean).join(' · '));
      add('Collector', a.agent && a.agent.collector && a.agent.collector.name);
      add('First seen', a.firstSeenAt);
      add('Last seen', a.lastSeenAt + ' (' + ago(a.lastSeenAt) + ')');
      add('Heartbeats', a.heartbeatCount);
      var facts = a.facts ? Object.keys(a.facts).map(function (k) { return k + '=' + a.facts[k]; }).join(', ') : '';
      add('Facts', facts);
      var body = $('d-events');
      body.textContent = '';
      a.events.edges.forEach(function (e) {
        var tr = el('tr');
        tr.appendChild(el('td', e.node.occurredAt));
        tr.appendChild(el('td', e.node.type));
        tr.appendChild(el('td', summarize(e.node.type, e.node.payload), 'payload'));
        body.appendChild(tr);
      });
      $('details').hidden = false;
    }).catch(showError);
  }

  function short(v) {
    if (v === null || v === undefined) return '–';
    var s = typeof v === 'string' ? v : JSON.stringify(v);
    return s.length > 80 ? s.slice(0, 80) + '…' : s;
  }

  // summarize says what an event means in a line: the changed fields with their old and new
  // values, who acted on an identity, which heartbeat arrived.
  function summarize(type, p) {
    if (!p || typeof p !== 'object') return '';
    if (type === 'asset.inventory.changed' && p.changes) {
      return Object.keys(p.changes).sort().map(function (k) {
        return k + ': ' + short(p.changes[k].old) + ' → ' + short(p.changes[k].new);
      }).join('; ');
    }
    if (type.indexOf('agent.') === 0) {
      var parts = [];
      if (p.actor_kind) parts.push('by ' + p.actor_kind.toLowerCase().replace('_', ' '));
      if (p.reason) parts.push('reason: ' + p.reason);
      if (p.hostname) parts.push('hostname ' + p.hostname);
      if (parts.length) return parts.join(', ');
    }
    if (p.heartbeat_id) return 'heartbeat ' + p.heartbeat_id;
    return short(p);
  }

  // ---- live updates (graphql-transport-ws) ---------------------------------------------

  function setLive(s, text) {
    var live = $('live');
    live.setAttribute('data-state', s);
    live.textContent = text;
  }

  function wsURL() {
    if (/^https?:/.test(endpoint)) return endpoint.replace(/^http/, 'ws');
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + endpoint;
  }

  function stopLive() {
    if (state.ws) {
      state.ws.onclose = null;
      state.ws.close(1000);
      state.ws = null;
    }
  }

  function startLive() {
    stopLive();
    var ws = new WebSocket(wsURL(), 'graphql-transport-ws');
    state.ws = ws;
    setLive('connecting', 'connecting…');
    ws.onopen = function () {
      ws.send(JSON.stringify({ type: 'connection_init', payload: { Authorization: 'Bearer ' + state.token } }));
    };
    ws.onmessage = function (ev) {
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      switch (msg.type) {
        case 'connection_ack':
          state.wsRetry = 0;
          ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: {
            query: 'subscription($s: ID) { assetUpdated(siteId: $s) { ' + ASSET_FIELDS + ' } }',
            variables: { s: state.siteId || null } } }));
          setLive('on', 'live');
          break;
        case 'ping':
          ws.send(JSON.stringify({ type: 'pong' }));
          break;
        case 'next':
          if (msg.payload && msg.payload.data && msg.payload.data.assetUpdated) {
            onAssetUpdated(msg.payload.data.assetUpdated);
          } else if (msg.payload && msg.payload.errors) {
            showError(explain(new GQLError((msg.payload.errors[0].extensions || {}).code || 'ERROR', msg.payload.errors[0].message)));
          }
          break;
        case 'error':
          var e = (msg.payload && msg.payload[0]) || {};
          showError(explain(new GQLError((e.extensions || {}).code || 'ERROR', e.message || 'subscription refused')));
          setLive('off', 'no live updates');
          break;
      }
    };
    ws.onclose = function (ev) {
      state.ws = null;
      if (ev.code === 4403) {
        // The token was refused: retrying would only be refused again.
        setLive('off', 'no live updates');
        showError(MESSAGES.UNAUTHENTICATED);
        return;
      }
      var wait = Math.min(30000, 1000 * Math.pow(2, state.wsRetry++));
      setLive('off', 'reconnecting…');
      setTimeout(function () { if (!state.ws && state.token) startLive(); }, wait);
    };
  }

  // ---- session -------------------------------------------------------------------------

  function loadSites() {
    return gql('{ sites { id name } }').then(function (d) {
      var sel = $('site');
      while (sel.options.length > 1) sel.remove(1);
      d.sites.forEach(function (s) {
        var o = el('option', s.name);
        o.value = s.id;
        sel.appendChild(o);
      });
    });
  }

  function reload() {
    return Promise.all([loadSummary(), loadAssets()]);
  }

  var refreshTimer = null;

  function connect(token) {
    state.token = token;
    clearError();
    return gql('{ viewer { kind role name tenant { name slug } } }').then(function (d) {
      var v = d.viewer;
      if (v.kind !== 'USER') {
        throw new GQLError('AGENT_TOKEN', 'agent token');
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      $('tenant').textContent = v.tenant.name + ' · ' + v.name + ' (' + v.role.toLowerCase() + ')';
      $('login').hidden = true;
      $('forget').hidden = false;
      $('fleet').hidden = false;
      return loadSites().then(reload);
    }).then(function () {
      startLive();
      clearInterval(refreshTimer);
      refreshTimer = setInterval(function () { reload().catch(showError); }, REFRESH_MS);
    }).catch(function (err) {
      showError(err);
      if (err instanceof GQLError && /^(UNAUTHENTICATED|FORBIDDEN|AGENT_TOKEN)$/.test(err.code)) {
        disconnect();
      }
    });
  }

  // disconnect forgets the token: it was refused, or the user asked.
  function disconnect() {
    stopLive();
    clearInterval(refreshTimer);
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    $('fleet').hidden = true;
    $('login').hidden = false;
    $('forget').hidden = true;
    $('tenant').textContent = '';
    setLive('off', 'offline');
  }

  function resetPaging() {
    state.cursors = [null];
    state.page = 0;
  }

  function init() {
    $('login').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = $('token').value.trim().replace(/^Bearer\s+/i, '');
      $('token').value = '';
      if (t) connect(t);
    });
    $('forget').addEventListener('click', function () { clearError(); disconnect(); });
    $('site').addEventListener('change', function () {
      state.siteId = $('site').value;
      resetPaging();
      reload().catch(showError);
      startLive(); // the subscription is filtered by site on the server
    });
    var searchTimer = null;
    $('search').addEventListener('input', function () {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(function () {
        state.search = $('search').value.trim();
        resetPaging();
        loadAssets().catch(showError);
      }, 250);
    });
    $('next').addEventListener('click', function () {
      if (!state.pageInfo || !state.pageInfo.hasNextPage) return;
      state.cursors[state.page + 1] = state.pageInfo.endCursor;
      state.page++;
      loadAssets().catch(showError);
    });
    $('prev').addEventListener('click', function () {
      if (state.page === 0) return;
      state.page--;
      loadAssets().catch(showError);
    });
    $('d-close').addEventListener('click', function () {
      state.selected = null;
      $('details').hidden = true;
    });
    var saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) connect(saved);
  }

  init();
})();
