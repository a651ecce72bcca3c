// Refreshes the parts of a page marked data-refresh: fetches their server-rendered (escaped)
// HTML every data-every seconds and swaps it in, so the overview stays live without reloading.
(function () {
  "use strict";
  function start(el) {
    var every = Math.max(1, parseInt(el.getAttribute("data-every") || "5", 10)) * 1000;
    function tick() {
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { el.innerHTML = html; } })
        .catch(function () {})
        .then(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(start);
  });
})();
