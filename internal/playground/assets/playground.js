/*
 * Bootstrap for the embedded GraphiQL playground.
 *
 * Served from the same origin as the page so that the Content-Security-Policy
 * can be script-src 'self' (no inline script, no nonce). Configuration is
 * passed by the Go handler as data-* attributes on #graphiql.
 *
 * Expects the UMD globals React, ReactDOM, GraphiQL and graphqlWs (graphql-ws, used for
 * subscriptions).
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

  // Close codes after which connecting again cannot help: the server refused the request
  // itself (a bad or revoked token, a malformed message, a slow or repeated connection_init).
  // graphql-ws would retry some of them (4403 among them) with a growing back-off, for about
  // 40 s, before it reports anything; for these the playground reports at once.
  var TERMINAL_CLOSE = {
    4400: 'the server refused a malformed message (4400 Bad Request)',
    4401: 'the server refused a subscription sent before the connection was accepted (4401 Unauthorized)',
    4403: 'the server refused the token (4403 Forbidden). Put a valid API token in the Headers tab ' +
      'as "Authorization": "Bearer <token>" and run the subscription again',
    4408: 'the server closed the connection: it was not initialised in time (4408)',
    4429: 'the server closed the connection: it was initialised twice (4429)'
  };

  function isCloseEvent(e) {
    return !!e && typeof e === 'object' && typeof e.code === 'number' && 'reason' in e;
  }

  // describe turns what graphql-ws reports (a CloseEvent, an Error, a list of GraphQL errors)
  // into GraphQL errors that read as sentences. They are shown as a result, not thrown:
  // GraphiQL prints a thrown error with its JavaScript stack.
  function describe(err, url) {
    if (Array.isArray(err)) {
      return err.map(function (e) {
        return { message: String(e && e.message), locations: e && e.locations, path: e && e.path, extensions: e && e.extensions };
      });
    }
    if (isCloseEvent(err)) {
      var known = TERMINAL_CLOSE[err.code];
      var message = known
        ? 'Subscription refused: ' + known + '.'
        : 'Subscription ended: the WebSocket connection to ' + url + ' closed (code ' + err.code +
          (err.reason ? ', ' + err.reason : '') + ').';
      return [{ message: message, extensions: { closeCode: err.code, closeReason: err.reason || undefined } }];
    }
    if (err instanceof Error) {
      return [{ message: 'Subscription failed: ' + err.message }];
    }
    // A connection that could not be opened at all is reported as a bare Event.
    return [{ message: 'Subscription failed: the WebSocket connection to ' + url + ' could not be opened.' }];
  }

  // isSubscription tells whether the operation to run is a subscription. A document that does
  // not parse goes to the server over HTTP, which reports the error.
  function isSubscription(params) {
    var graphql = window.GraphiQL.GraphQL;
    try {
      var op = graphql.getOperationAST(graphql.parse(params.query), params.operationName || undefined);
      return !!op && op.operation === 'subscription';
    } catch (e) {
      return false;
    }
  }

  // subscribe runs one subscription on its own graphql-ws client (graphql-transport-ws), with
  // the Headers editor's content as the connection_init payload, so the server sees
  // {"Authorization": "Bearer <token>"}. It returns the Observable GraphiQL expects.
  function subscribe(wsURL, params, headers) {
    return {
      subscribe: function (observer) {
        var closed = false;
        var client = window.graphqlWs.createClient({
          url: wsURL,
          connectionParams: headers || {},
          lazy: true,
          // A dropped connection (a restarted replica, a network blip) is tried again a couple
          // of times; a refusal by the server is not.
          retryAttempts: 2,
          shouldRetry: function (e) {
            return !(isCloseEvent(e) && TERMINAL_CLOSE[e.code]);
          }
        });
        function end() {
          if (closed) {
            return;
          }
          closed = true;
          client.dispose();
          observer.complete();
        }
        var stop = client.subscribe(
          { query: params.query, variables: params.variables, operationName: params.operationName },
          {
            next: function (value) {
              if (!closed) {
                observer.next(value);
              }
            },
            error: function (err) {
              if (!closed) {
                observer.next({ errors: describe(err, wsURL) });
              }
              end();
            },
            complete: end
          }
        );
        return {
          unsubscribe: function () {
            if (!closed) {
              closed = true;
              stop();
              client.dispose();
            }
          }
        };
      }
    };
  }

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
    if (!window.React || !window.ReactDOM || !window.GraphiQL || !window.graphqlWs) {
      showError(root, 'GraphiQL assets failed to load.');
      return;
    }

    var endpoint = root.getAttribute('data-endpoint') || '/query';
    var httpURL = new URL(endpoint, window.location.href);
    httpURL.hash = '';
    var wsURL = new URL(httpURL.href);
    wsURL.protocol = httpURL.protocol === 'https:' ? 'wss:' : 'ws:';

    // Queries and mutations go over HTTP with the Headers editor's content as request headers
    // (createFetcher from @graphiql/toolkit). Subscriptions get their own graphql-ws client,
    // because the toolkit's one cannot be told to stop retrying a refused connection.
    var httpFetcher = window.GraphiQL.createFetcher({ url: httpURL.href });
    var fetcher = function (params, opts) {
      if (isSubscription(params)) {
        return subscribe(wsURL.href, params, opts && opts.headers);
      }
      // GraphiQL may pass the parsed document of the editor's previous content (it is updated
      // a moment after an edit), and createFetcher would pick the transport by it: a query run
      // right after a subscription would be refused. Only the headers are passed on.
      return httpFetcher(params, { headers: opts && opts.headers });
    };

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
