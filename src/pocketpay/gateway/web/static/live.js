// Live updates: the stream's events say *that* something changed; the page fetches the
// server-rendered parts it shows ([data-live] regions) again and swaps them in. No event
// payload is read here, so the script does not depend on their shapes.
(function () {
  "use strict";
  var regions = document.querySelectorAll("[data-live]");
  var state = document.getElementById("live-state");
  var types = (state && state.dataset.events || "").split(" ").filter(Boolean);
  var source = null;
  var failures = 0;
  var MAX_FAILURES = 5;

  function say(text) { if (state) { state.textContent = "Live updates: " + text; } }

  function busy(region) {
    // Never wipe what the person is typing into a form of the region.
    var active = document.activeElement;
    return active && region.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function refresh(region) {
    if (busy(region)) { return; }
    fetch(region.dataset.live, {credentials: "same-origin", cache: "no-store"})
      .then(function (res) {
        if (res.redirected && res.url.indexOf("/login") !== -1) { location.assign("/login"); return null; }
        return res.ok ? res.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined) { region.innerHTML = html; } })
      .catch(function () { say("offline, retrying"); });
  }

  function refreshAll() { regions.forEach(refresh); }

  function renew() {
    // The access token in the session cookie expired: rotate it with the refresh cookie.
    return fetch("/app/session/refresh", {method: "POST", credentials: "same-origin"})
      .then(function (res) { if (res.status === 401) { location.assign("/login"); } return res.ok; });
  }

  function renewed() {
    // Counted on the page (data-renewals) so a person or a test can see the session renewed.
    document.body.dataset.renewals = String((Number(document.body.dataset.renewals) || 0) + 1);
  }

  function connect() {
    if (source) { source.close(); }
    source = new EventSource("/api/v1/stream");
    source.onopen = function () {
      // Catch up on what happened before the stream was open (or while it was down).
      failures = 0; refreshAll(); say("on"); document.body.dataset.live = "on";
    };
    types.forEach(function (type) { source.addEventListener(type, refreshAll); });
    source.addEventListener("stream.token_expired", function () {
      source.close();
      renew().then(function (ok) { if (ok) { renewed(); connect(); } });
    });
    source.addEventListener("stream.resume_expired", refreshAll);
    source.addEventListener("stream.slow_consumer", refreshAll);
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) { say("reconnecting"); return; }
      // Closed for good (e.g. 401 with an expired cookie): renew once, then reconnect and
      // catch up on what may have happened meanwhile; give up after a few tries.
      failures += 1;
      if (failures > MAX_FAILURES) { say("off (reload the page)"); return; }
      say("reconnecting");
      renew().then(function (ok) {
        if (ok) { setTimeout(connect, 500 * failures); }
      }).catch(function () { say("offline"); });
    };
  }

  if (!regions.length) {
    if (state) { state.hidden = true; }  // nothing on this page changes by itself
  } else if (window.EventSource) {
    connect();
  } else {
    say("off (this browser has no EventSource)");
  }
})();
