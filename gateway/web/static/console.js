/* The console's progressive enhancement. Every page works without it; with it:
 * - regions marked data-live-src re-fetch their HTML fragment every 2 s and swap it in
 *   (the sessions table, a transcript), so new texts and delivery statuses appear without a reload;
 * - a select marked data-autosubmit submits its form when changed;
 * - the assistant form shows only the engine settings the chosen provider uses.
 * No framework and no build step: this file is served as written. */
(function () {
  "use strict";

  var POLL_MS = 2000;

  function startLive(region) {
    var src = region.getAttribute("data-live-src");
    var indicator = document.querySelector('[data-live-indicator="' + region.id + '"]');
    var last = null;
    var inFlight = false;
    if (indicator) { indicator.hidden = false; }

    function tick() {
      // A hidden tab polls nothing; it catches up as soon as it is shown again.
      if (inFlight || document.hidden) { return; }
      inFlight = true;
      fetch(src, { credentials: "same-origin", cache: "no-store", redirect: "manual",
                   headers: { "X-Requested-With": "console.js" } })
        .then(function (response) {
          // A redirect means the sign-in ended (key revoked, signed out elsewhere). It is not
          // followed here, so the sign-in page (and its message) is shown by reloading this page.
          if (response.type === "opaqueredirect") { window.location.reload(); return null; }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          region.classList.remove("live-failed");
          if (indicator) { indicator.classList.remove("live-failed"); }
          // Swapped only when it changed, so a text being selected is not lost every 2 s.
          if (html !== null && html !== last) {
            region.innerHTML = html; // server-rendered and escaped by the templates
            last = html;
            region.setAttribute("data-live-updated", String(Date.now()));
          }
        })
        .catch(function () {
          // Keep the last good view and say so; the next tick tries again.
          region.classList.add("live-failed");
          if (indicator) { indicator.classList.add("live-failed"); }
        })
        .then(function () { inFlight = false; });
    }

    window.setInterval(tick, POLL_MS);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { tick(); } });
  }

  function showEngineSettings(form) {
    var select = form.querySelector("[data-provider-select]");
    if (!select) { return; }
    function update() {
      var provider = select.value;
      var blocks = form.querySelectorAll("[data-providers]");
      for (var i = 0; i < blocks.length; i++) {
        var used = blocks[i].getAttribute("data-providers").split(" ");
        var input = blocks[i].querySelector("input");
        // A setting that has a value stays visible, so nothing the operator typed is hidden.
        blocks[i].hidden = used.indexOf(provider) < 0 && !(input && input.value);
      }
    }
    select.addEventListener("change", update);
    update();
  }

  function ready() {
    var regions = document.querySelectorAll("[data-live-src]");
    for (var i = 0; i < regions.length; i++) { startLive(regions[i]); }

    var autos = document.querySelectorAll("select[data-autosubmit]");
    for (var j = 0; j < autos.length; j++) {
      autos[j].addEventListener("change", function (event) { event.target.form.submit(); });
    }

    var engines = document.querySelectorAll("[data-engine]");
    for (var k = 0; k < engines.length; k++) { showEngineSettings(engines[k]); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
