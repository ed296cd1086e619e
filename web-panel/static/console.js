// The console page: an xterm.js terminal (vendored, /static/vendor/xterm/)
// joined to the panel's console WebSocket (api/console.rs). Binary frames
// carry the terminal's bytes both ways; a text frame tells the server the
// terminal's size. How the console ended is written under the terminal.
(function () {
  "use strict";
  var box = document.getElementById("terminal");
  var state = document.getElementById("console-state");
  if (!box || !window.Terminal) { return; }
  var term = new window.Terminal({
    cols: 100, rows: 28, cursorBlink: false, scrollback: 2000,
    fontFamily: '"DejaVu Sans Mono", monospace', fontSize: 15
  });
  term.open(box);
  // What the terminal shows, as text: for people's assistive tools (the
  // live region below) and for the panel's own browser test.
  window.keelConsole = {
    text: function () {
      var b = term.buffer.active, out = [];
      for (var i = 0; i < b.length; i++) {
        var line = b.getLine(i);
        out.push(line ? line.translateToString(true) : "");
      }
      return out.join("\n");
    },
    state: function () { return state.dataset.state || ""; }
  };
  function show(what, text) {
    state.dataset.state = what;
    state.textContent = text;
  }
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var url = scheme + location.host + box.dataset.ws +
      "?cols=" + term.cols + "&rows=" + term.rows;
  var ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  var encoder = new TextEncoder();
  show("connecting", "Connecting…");
  ws.onopen = function () {
    show("open", "Connected. Closing this page closes the console.");
    term.focus();
  };
  ws.onmessage = function (ev) {
    if (typeof ev.data !== "string") { term.write(new Uint8Array(ev.data)); }
  };
  ws.onclose = function (ev) {
    var why = ev.reason || (ev.code === 1006 ? "the console could not be opened, or the connection was lost" : "closed");
    show("closed", "The console is closed: " + why + ".");
  };
  term.onData(function (d) {
    if (ws.readyState === WebSocket.OPEN) { ws.send(encoder.encode(d)); }
  });
  term.onResize(function (size) {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "resize", cols: size.cols, rows: size.rows }));
    }
  });
  window.addEventListener("pagehide", function () { ws.close(); });
})();
