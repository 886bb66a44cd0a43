// Refreshes a page whose <main> carries data-refresh="SECONDS": fetches the same page, swaps
// the new <main> in and keeps the freshness line ticking. Served from this host (CSP 'self');
// without it the page is a plain page that says when it was rendered.
"use strict";
(function () {
  var main = document.querySelector("main[data-refresh]");
  var line = document.getElementById("freshness");
  if (!main || !line || !window.fetch || !window.DOMParser) {
    return;
  }
  var every = Math.max(5, Number(main.getAttribute("data-refresh")) || 30) * 1000;
  var updated = Date.now();
  var failed = false;

  function tick() {
    var seconds = Math.max(0, Math.round((Date.now() - updated) / 1000));
    var text = line.getAttribute(failed ? "data-stale" : "data-fresh") || "";
    line.textContent = text.replace("{n}", String(seconds));
    line.classList.toggle("stale", failed);
  }

  function swap(html) {
    var page = new DOMParser().parseFromString(html, "text/html");
    var next = page.querySelector("main[data-refresh]");
    if (!next) {
      throw new Error("not a refreshing page");
    }
    // Copies, not moves: moving a node out of the live childNodes list would skip its sibling.
    var nodes = Array.prototype.map.call(next.childNodes, function (node) {
      return document.importNode(node, true);
    });
    main.replaceChildren.apply(main, nodes);
  }

  function pull() {
    if (document.hidden) {
      window.setTimeout(pull, every);
      return;
    }
    fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
      headers: { Accept: "text/html" },
    })
      .then(function (answer) {
        if (answer.status !== 200) {
          throw new Error("answered " + answer.status);
        }
        return answer.text();
      })
      .then(function (html) {
        swap(html);
        updated = Date.now();
        failed = false;
      })
      .catch(function () {
        failed = true;
      })
      .then(function () {
        tick();
        window.setTimeout(pull, every);
      });
  }

  tick();
  window.setInterval(tick, 1000);
  window.setTimeout(pull, every);
})();
