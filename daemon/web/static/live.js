// batchd serve: live pages and control buttons. Small on purpose, no dependencies, no build step.
//
// Live: an EventSource on /api/stream?since=<the seq the page shows>. On `log` events it waits a
// moment (a burst of events is one refresh), fetches this page's <main id="live"> again
// (header X-Batchd-Fragment: 1) and swaps it in, keeping the scroll positions. On `reload` (the page
// is too far behind the stream) it reloads the whole page. #live-state says "live" or
// "reconnecting" (class "stale"). After each swap it dispatches `batchd:updated` on document, for
// page scripts that decorate the new content (they should bind by event delegation anyway).
// A page about one stream (an element of main has data-stream="todo-7") refreshes only on that
// stream's events: a todo's page is not fetched again for every other todo's event. On `stale` (the
// server cannot read the log: retrying, or for good) #live-state says why; on `live`, it follows again.
//
// Control: window.batchd.control(action, todoId) POSTs /control/<action> with the header
// X-Batchd-Control: 1 (which a cross-site form cannot send) and shows the answer's text. Buttons
// <button data-control="pause|resume|retry|cancel" data-todo="ID"> call it (one listener on
// document, so buttons in swapped-in content work too); data-confirm="question" asks first.
(function () {
  "use strict";

  var DEBOUNCE_MS = 150;
  var RETRY_MS = 3000;
  var body = document.body;
  var stateEl = document.getElementById("live-state");

  function showState(text, stale, title) {
    if (!stateEl) return;
    stateEl.textContent = text;
    stateEl.classList.toggle("stale", !!stale);
    if (title) stateEl.title = title;
  }

  // -- refreshing <main id="live"> -----------------------------------------------------------------

  var timer = null;
  var inFlight = false;
  var again = false;

  function scrolledInside(main) {
    var kept = [];
    var nodes = main.querySelectorAll("[id]");
    for (var i = 0; i < nodes.length; i++) {
      var n = nodes[i];
      if (n.scrollTop || n.scrollLeft) kept.push([n.id, n.scrollTop, n.scrollLeft]);
    }
    return kept;
  }

  function refresh() {
    timer = null;
    if (inFlight) {
      again = true; // one more refresh when this one ends: never two at once, never one lost
      return;
    }
    inFlight = true;
    fetch(location.href, {
      headers: { "X-Batchd-Fragment": "1" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var main = document.getElementById("live");
        if (!main) return;
        var x = window.scrollX;
        var y = window.scrollY;
        var inner = scrolledInside(main);
        main.innerHTML = html; // the server's own autoescaped template, never event text
        for (var i = 0; i < inner.length; i++) {
          var n = document.getElementById(inner[i][0]);
          if (n) {
            n.scrollTop = inner[i][1];
            n.scrollLeft = inner[i][2];
          }
        }
        window.scrollTo(x, y);
        document.dispatchEvent(new CustomEvent("batchd:updated"));
      })
      .catch(function (err) {
        showState("reconnecting", true, "could not refresh the page: " + err.message);
      })
      .then(function () {
        inFlight = false;
        if (again) {
          again = false;
          schedule();
        }
      });
  }

  function schedule() {
    if (timer === null) timer = setTimeout(refresh, DEBOUNCE_MS);
  }

  // -- the event stream ---------------------------------------------------------------------------

  var source = null;
  var reopenTimer = null;

  // Whether a `log` event is one this page shows: any, unless main names its stream.
  function concerns(e) {
    var main = document.getElementById("live");
    var mine = main ? main.querySelector("[data-stream]") : null;
    if (!mine) return true;
    try {
      return JSON.parse(e.data).stream === mine.getAttribute("data-stream");
    } catch (ignored) {
      return true; // data we cannot read: refreshing is the safe side
    }
  }

  function open() {
    reopenTimer = null;
    if (!window.EventSource) return;
    var since = body.dataset.lastSeq || "";
    source = new EventSource("/api/stream?since=" + encodeURIComponent(since));
    source.onopen = function () {
      showState("live", false, "updates live from the event log");
    };
    source.addEventListener("log", function (e) {
      if (e.lastEventId) body.dataset.lastSeq = e.lastEventId;
      if (concerns(e)) schedule();
    });
    source.addEventListener("live", function () {
      showState("live", false, "updates live from the event log");
    });
    source.addEventListener("reload", function () {
      close();
      location.reload();
    });
    source.addEventListener("stale", function (e) {
      var why = "the dashboard stopped following the log";
      try {
        why = JSON.parse(e.data).error || why;
      } catch (ignored) {}
      showState("stale", true, why);
    });
    source.onerror = function () {
      showState("reconnecting", true, "the connection to batchd serve was lost; retrying");
      // EventSource retries by itself while CONNECTING; once CLOSED (an HTTP error such as 401,
      // or the server gone) it never does, so open a new one, from the seq this page now shows.
      if (source && source.readyState === EventSource.CLOSED) {
        close();
        reopenTimer = setTimeout(open, RETRY_MS);
      }
    };
  }

  function close() {
    if (source) {
      source.close();
      source = null;
    }
    if (reopenTimer !== null) {
      clearTimeout(reopenTimer);
      reopenTimer = null;
    }
  }

  // A page kept in the back-forward cache must not keep a stream open; one shown again reopens.
  window.addEventListener("pagehide", close);
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && !source) open();
  });

  // -- control ------------------------------------------------------------------------------------

  function answerBox() {
    var box = document.getElementById("control-answer");
    if (!box) {
      box = document.createElement("div");
      box.id = "control-answer";
      box.setAttribute("role", "status");
      box.setAttribute("aria-live", "polite");
      body.appendChild(box);
    }
    return box;
  }

  function showAnswer(text, ok) {
    var box = answerBox();
    box.textContent = text; // text, never markup: the answer may quote a todo title
    box.classList.toggle("error", !ok);
    box.hidden = false;
  }

  function control(action, todoId) {
    var form = new URLSearchParams();
    if (todoId) form.append("todo_id", todoId);
    return fetch("/control/" + encodeURIComponent(action), {
      method: "POST",
      headers: { "X-Batchd-Control": "1" },
      body: form,
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.text().then(function (text) {
          showAnswer(text.trim() || response.status + " " + response.statusText, response.ok);
          return { ok: response.ok, status: response.status, text: text };
        });
      })
      .catch(function (err) {
        showAnswer(action + ": could not reach batchd serve (" + err.message + ")", false);
        return { ok: false, status: 0, text: err.message };
      });
  }

  document.addEventListener("click", function (e) {
    var target = e.target;
    var button = target && target.closest ? target.closest("[data-control]") : null;
    if (!button || button.disabled) return;
    e.preventDefault();
    var question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    control(button.getAttribute("data-control"), button.getAttribute("data-todo")).then(function () {
      button.disabled = false;
    });
  });

  // pending(): a refresh is waiting or under way (for page scripts and the tests).
  window.batchd = {
    control: control,
    refresh: schedule,
    pending: function () {
      return timer !== null || inFlight;
    },
  };

  open();
})();
