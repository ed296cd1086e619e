// The panel's one script, served at /static/panel.js and loaded (deferred)
// by every page; the Content-Security-Policy allows no inline script. Each
// part acts only on the page that has its element, and every page works
// without it.

// A form with data-confirm asks before it posts.
document.addEventListener('submit', function (e) {
  var msg = e.target.dataset && e.target.dataset.confirm;
  if (msg && !window.confirm(msg)) e.preventDefault();
});

// The server page: follow the job output and the status live.
(function () {
  var log = document.getElementById('joblog');
  if (!log || !window.EventSource) return;
  var url = log.dataset.events;
  if (log.dataset.after) url += '?after=' + encodeURIComponent(log.dataset.after);
  var es = new EventSource(url);
  var note = document.getElementById('joblog-note');
  es.onopen = function () { note.innerHTML = '<small>Live.</small>'; };
  es.addEventListener('log', function (e) {
    var d = JSON.parse(e.data);
    var span = document.createElement('span');
    span.className = 'line';
    span.dataset.id = d.job_id + ':' + d.seq;
    span.textContent = d.text + '\n';
    var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(span);
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  es.addEventListener('status', function (e) {
    var d = JSON.parse(e.data);
    var st = document.getElementById('status');
    st.className = 'status-' + d.status;
    st.textContent = d.status + (d.failure_reason ? ': ' + d.failure_reason : '');
  });
  es.addEventListener('job', function (e) {
    var d = JSON.parse(e.data);
    var row = document.querySelector('tr[data-job="' + d.id + '"] .job-state');
    if (row) row.textContent = d.state;
  });
  es.addEventListener('end', function () {
    es.close();
    note.innerHTML = '<small>Stream ended; reload to refresh.</small>';
  });
})();

// The run page: follow the run's output live; when the run ends, reload
// once for the recap and the per-host table.
(function () {
  var out = document.getElementById('output');
  if (!out || !out.dataset.events || !window.EventSource) return;
  var es = new EventSource(out.dataset.events + '?after=' + encodeURIComponent(out.dataset.after || '0'));
  var note = document.getElementById('output-note');
  es.onopen = function () { note.innerHTML = '<small>Live.</small>'; };
  es.addEventListener('log', function (e) {
    var d = JSON.parse(e.data);
    var span = document.createElement('span');
    span.className = 'line';
    span.dataset.seq = d.seq;
    span.textContent = d.text + '\n';
    var atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    out.appendChild(span);
    if (atEnd) out.scrollTop = out.scrollHeight;
  });
  es.addEventListener('status', function (e) {
    var d = JSON.parse(e.data);
    var st = document.getElementById('status');
    st.className = 'status-' + d.status;
    st.textContent = d.status;
  });
  es.addEventListener('end', function () {
    es.close();
    note.innerHTML = '<small>The run has ended; loading its recap.</small>';
    window.location.reload();
  });
})();
