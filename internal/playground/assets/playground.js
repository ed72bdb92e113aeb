/*
 * Bootstrap for the embedded GraphiQL playground.
 *
 * Served from the same origin as the page so that the Content-Security-Policy
 * can be script-src 'self' (no inline script, no nonce). Configuration is
 * passed by the Go handler as data-* attributes on #graphiql.
 *
 * Expects the UMD globals React, ReactDOM and GraphiQL (graphiql 3.x bundles
 * graphql-ws, which createFetcher uses for subscriptions).
 */
(function () {
  'use strict';

  var DEFAULT_HEADERS = '{\n  "Authorization": "Bearer <paste token here>"\n}';

  var DEFAULT_QUERY = [
    '# ' + (document.title || 'GraphQL playground'),
    '#',
    '# Authentication: open the "Headers" tab below and',
    '# replace <paste token here> with your API token,',
    '# keeping the "Bearer " prefix.',
    '#',
    '# The headers are sent with every HTTP request and as',
    '# the connection_init payload of subscriptions',
    '# (graphql-transport-ws). They are never saved in the',
    '# browser: paste the token again after a reload.',
    '#',
    '# Run with Ctrl+Enter (Cmd+Enter) or the play button.',
    '',
    '{',
    '  viewer {',
    '    kind',
    '    role',
    '    tenant {',
    '      slug',
    '    }',
    '  }',
    '}',
    ''
  ].join('\n');

  function showError(root, message) {
    root.textContent = '';
    var pre = document.createElement('pre');
    pre.className = 'playground-error';
    pre.textContent = message;
    root.appendChild(pre);
  }

  function main() {
    var root = document.getElementById('graphiql');
    if (!root) {
      return;
    }
    if (!window.React || !window.ReactDOM || !window.GraphiQL) {
      showError(root, 'GraphiQL assets failed to load.');
      return;
    }

    var endpoint = root.getAttribute('data-endpoint') || '/query';
    var httpURL = new URL(endpoint, window.location.href);
    httpURL.hash = '';
    var wsURL = new URL(httpURL.href);
    wsURL.protocol = httpURL.protocol === 'https:' ? 'wss:' : 'ws:';

    // createFetcher (from @graphiql/toolkit) sends the Headers editor content
    // with every HTTP request, and for subscriptions it creates a graphql-ws
    // client (graphql-transport-ws protocol) whose connectionParams are
    // {...wsConnectionParams, ...headers}. So the connection_init payload is
    // {"Authorization": "Bearer <token>"}, exactly as the server expects.
    var fetcher = window.GraphiQL.createFetcher({
      url: httpURL.href,
      subscriptionUrl: wsURL.href
    });

    var props = {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      // defaultHeaders pre-fills new tabs; headers (re)fills the editor on
      // page load, since GraphiQL restores saved tabs with empty headers
      // when shouldPersistHeaders is false (the token is never stored).
      defaultHeaders: DEFAULT_HEADERS,
      headers: DEFAULT_HEADERS,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      defaultEditorToolsVisibility: 'headers'
    };
    ReactDOM.createRoot(root).render(React.createElement(window.GraphiQL, props));
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', main);
  } else {
    main();
  }
})();
