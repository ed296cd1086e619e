// Keel panel: the only script the pages load (/static/keel.js; the
// Content-Security-Policy allows no inline script, handler or style). Every
// page works without it; with it, destructive buttons ask first, the server
// page and job pages follow their status, power state, jobs and output
// live, and the run page follows its run's output.
(function () {
  'use strict';

  // Forms with data-confirm ask before they post. The server asks again
  // (a confirmation page) when the `confirmed` field comes back empty, so
  // without this script nothing is lost but a click.
  document.addEventListener('submit', function (e) {
    var form = e.target;
    var question = form.getAttribute('data-confirm');
    if (!question) return;
    if (!window.confirm(question)) {
      e.preventDefault();
      return;
    }
    var field = form.querySelector('input[name=confirmed]');
    if (field) field.value = 'yes';
  });

  function byId(id) { return document.getElementById(id); }

  // A box that scrolls sideways (a wide table on a phone) takes the
  // keyboard focus, so it can be scrolled without a mouse.
  function focusableScrollers() {
    document.querySelectorAll('table, .table-wrap, pre').forEach(function (el) {
      if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1) {
        if (!el.hasAttribute('tabindex')) el.setAttribute('tabindex', '0');
      }
    });
  }
  focusableScrollers();
  window.addEventListener('resize', focusableScrollers);

  followRun();
  followServer();
  followRuns();

  // The runs list: every few seconds, while the tab is shown, the same
  // filter and page from the JSON API (`data-live`); rows take their new
  // status and finish time, and the first page adds new runs at the top.
  // A list, not one stream per run: a browser keeps only a few
  // connections to one server open at once.
  function followRuns() {
    var table = byId('runs');
    if (!table || !table.dataset.live || !window.fetch) return;
    var body = table.tBodies[0];
    var tpl = byId('run-row');
    function when(ms) {
      return ms ? new Date(ms).toISOString().slice(0, 19).replace('T', ' ') + ' UTC' : '—';
    }
    function row(r) {
      var tr = body.querySelector('tr[data-run="' + r.id + '"]');
      if (!tr) {
        if (!table.dataset.firstPage || !tpl) return;
        tr = tpl.content.firstElementChild.cloneNode(true);
        tr.dataset.run = r.id;
        tr.querySelectorAll('a').forEach(function (a) { a.href = '/runs/' + r.id; });
        tr.querySelector('.run-link').textContent = '#' + r.id;
        tr.querySelector('.run-template a').textContent = r.template_name;
        tr.querySelector('.run-launcher').textContent = r.launched_by +
          (r.launched_user_name ? ' (' + r.launched_user_name + ')' : '');
        tr.querySelector('.run-created').textContent = when(r.created_at);
        body.insertBefore(tr, body.firstElementChild);
        var none = byId('no-runs');
        if (none) none.hidden = true;
        var wrap = byId('runs-wrap');
        if (wrap) wrap.hidden = false;
      }
      badge(tr.querySelector('.run-status'), r.status);
      tr.querySelector('.run-finished').textContent = when(r.finished_at);
      if (r.revision) {
        var code = document.createElement('code');
        code.textContent = r.revision.slice(0, 12);
        var cell = tr.querySelector('.run-revision');
        cell.textContent = '';
        cell.appendChild(code);
      }
    }
    function poll() {
      if (document.hidden) return;
      fetch(table.dataset.live, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (resp) { return resp.ok ? resp.json() : null; })
        .then(function (page) {
          if (!page || !page.items) return;
          // Oldest first, so new runs end up newest on top.
          page.items.slice().reverse().forEach(row);
        })
        .catch(function () {});
    }
    setInterval(poll, 3000);
  }

  // The run page: follow the run's output live; when the run ends, reload
  // once for the recap and the per-host table.
  function followRun() {
    var out = byId('output');
    if (!out || !out.dataset.events || !window.EventSource) return;
    var es = new EventSource(out.dataset.events + '?after=' + encodeURIComponent(out.dataset.after || '0'));
    var note = byId('output-note');
    function say(text) { if (note) note.textContent = text; }
    es.onopen = function () { say('Live.'); };
    es.onerror = function () { say('Reconnecting…'); };
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
      badge(byId('status'), d.status);
    });
    es.addEventListener('end', function () {
      es.close();
      say('The run has ended; loading its recap.');
      window.location.reload();
    });
  }

  function badge(el, word) {
    if (!el) return;
    el.textContent = word;
    el.className = el.className.replace(/\b(status|power)-[a-z_]+/g, '').trim() +
      ' ' + (el.dataset.kind || 'status') + '-' + word;
  }

  // The server page and a server's job page: one EventSource for status,
  // power, jobs and output.
  function followServer() {
    var log = byId('joblog');
    if (!log || !log.dataset.events || !window.EventSource) return;
    var url = log.dataset.events;
    if (log.dataset.after) url += (url.indexOf("?") >= 0 ? "&" : "?") + "after=" + encodeURIComponent(log.dataset.after);
    var es = new EventSource(url);
    var note = byId('joblog-note');
    function say(text) { if (note) note.textContent = text; }
    es.onopen = function () { say('Live.'); };
    es.onerror = function () { say('Reconnecting…'); };

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
      badge(byId('status'), d.status);
      var reason = byId('failure-reason');
      if (reason) reason.textContent = d.failure_reason || '';
      if (d.power_state !== undefined) badge(byId('power-state'), d.power_state || 'absent');
      // Show only the actions the server takes now.
      if (d.actions) {
        document.querySelectorAll('[data-action]').forEach(function (el) {
          var name = el.getAttribute('data-action');
          var on = name === 'retry' ? d.actions.retry
            : name === 'delete' ? d.actions['delete']
            : name === 'converge' ? d.actions.converge
            : (d.actions.power || []).indexOf(name) >= 0;
          el.hidden = !on;
        });
        var none = byId('no-actions');
        if (none) none.hidden = d.actions.retry || d.actions['delete'] || d.actions.converge || (d.actions.power || []).length > 0;
      }
      // The connection line comes with the ready server and goes with it.
      var conn = byId('connection');
      if (conn && d.connection !== undefined) {
        conn.hidden = !d.connection;
        var none = byId('connection-none');
        if (none) none.hidden = !!d.connection;
        if (d.connection) {
          byId('ssh-command').textContent = d.connection.command;
          var own = byId('connection-own-name');
          if (own) own.hidden = !!d.connection.user;
        }
      }
    });

    es.addEventListener('job', function (e) {
      var d = JSON.parse(e.data);
      // A job page: its own state.
      if (log.dataset.job) {
        if (String(d.id) === log.dataset.job) badge(byId('job-state'), d.state);
        return;
      }
      var row = document.querySelector('tr[data-job="' + d.id + '"]');
      if (!row) {
        // A job the page has not seen: a new row at the top.
        var table = byId('jobs');
        var tpl = byId('job-row');
        if (!table || !tpl) return;
        row = tpl.content.firstElementChild.cloneNode(true);
        row.dataset.job = d.id;
        row.dataset.kind = d.kind;
        var link = row.querySelector('.job-link');
        link.href = '/jobs/' + d.id;
        link.textContent = d.id;
        var kind = row.querySelector('.job-kind');
        kind.href = '/jobs/' + d.id;
        kind.textContent = d.kind;
        var form = row.querySelector('.cancel-form');
        if (form) form.action = '/jobs/' + d.id + '/cancel';
        var body = table.tBodies[0] || table;
        var first = body.querySelector('tr[data-job]');
        body.insertBefore(row, first);
        var empty = byId('no-jobs');
        if (empty) empty.hidden = true;
      }
      badge(row.querySelector('.job-state'), d.state);
      var attempts = row.querySelector('.job-attempts');
      if (attempts) attempts.textContent = d.attempts;
      var err = row.querySelector('.job-error');
      if (err) err.textContent = d.last_error || '—';
      var cancel = row.querySelector('.cancel-form');
      if (cancel) cancel.hidden = !(d.state === 'queued' || d.state === 'running');
    });

    es.addEventListener('end', function () {
      es.close();
      say('Stream ended; reload to refresh.');
    });
  }
})();
