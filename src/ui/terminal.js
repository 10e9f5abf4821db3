// berth's browser terminal: xterm.js (the host's node-xterm, bundled by esbuild) on the
// sandbox's terminal WebSocket. The key comes from the URL fragment (#key=...; it never
// reaches the server in the page request), or is asked for once and kept for the tab.
(function () {
  'use strict';
  var id = decodeURIComponent(location.pathname.split('/').pop());
  var params = new URLSearchParams(location.hash.slice(1));
  var status = document.getElementById('status');
  document.getElementById('sandbox').textContent = id;
  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? 'bad' : '';
  }
  var key = params.get('key') || sessionStorage.getItem('berth-key') || window.prompt('berth API key');
  if (!key) return say('no API key: open this page as /ui/terminal/ID#key=YOUR_KEY', true);
  sessionStorage.setItem('berth-key', key);
  // The key leaves the address bar (and the history); the session stays, for a reload.
  if (params.get('key')) {
    params.delete('key');
    history.replaceState(null, '', location.pathname + (params.toString() ? '#' + params : ''));
  }

  var term = new XtermBundle.Terminal({ cols: 120, rows: 32, rendererType: 'dom', cursorBlink: true });
  term.open(document.getElementById('term'));
  term.focus();
  window.berthTerm = term;
  // The screen as text (for tests and for copying): every line of the buffer.
  window.berthScreen = function () {
    var buffer = term._core.buffer, lines = [];
    for (var i = 0; i < buffer.lines.length; i++) lines.push(buffer.translateBufferLineToString(i, true));
    return lines.join('\n');
  };

  var query = new URLSearchParams({ token: key, cols: term.cols, rows: term.rows });
  if (params.get('session')) query.set('session', params.get('session'));
  var scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  var ws = new WebSocket(scheme + location.host + '/v1/sandboxes/' + encodeURIComponent(id) + '/terminal?' + query);
  ws.binaryType = 'arraybuffer';
  var decoder = new TextDecoder();
  var encoder = new TextEncoder();
  ws.onopen = function () { say('connected'); };
  ws.onmessage = function (event) {
    if (typeof event.data !== 'string') {
      term.write(decoder.decode(new Uint8Array(event.data), { stream: true }));
      return;
    }
    var control = JSON.parse(event.data);
    if (control.type === 'hello') say('connected · session ' + control.session);
    else if (control.type === 'exit') say('exited with ' + control.exit_code);
    else if (control.type === 'dropped') term.write('\r\n[berth: ' + control.bytes + ' bytes of earlier output are gone]\r\n');
    else if (control.type === 'error') say(control.message, true);
  };
  ws.onclose = function (event) {
    if (!/exited/.test(status.textContent)) say('disconnected' + (event.reason ? ': ' + event.reason : ''), true);
  };
  term.on('data', function (data) {
    if (ws.readyState === 1) ws.send(encoder.encode(data));
  });
  term.on('resize', function (size) {
    if (ws.readyState === 1) ws.send(JSON.stringify({ type: 'resize', cols: size.cols, rows: size.rows }));
  });
  // Fill the window: as many cells as fit.
  function fit() {
    var core = term._core, dims = core.renderer && core.renderer.dimensions;
    if (!dims || !dims.actualCellWidth) return;
    var box = document.getElementById('term');
    var cols = Math.max(20, Math.floor((box.clientWidth - 8) / dims.actualCellWidth));
    var rows = Math.max(5, Math.floor((box.clientHeight - 8) / dims.actualCellHeight));
    if (cols !== term.cols || rows !== term.rows) term.resize(cols, rows);
  }
  window.addEventListener('resize', fit);
  setTimeout(fit, 50);
})();
