// edgeline console: live patches over server-sent events, relative times. No framework, no CDN.
(function () {
  "use strict";
  var body = document.body;
  function ago() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time[data-ts]").forEach(function (t) {
      var s = now - parseFloat(t.dataset.ts);
      t.textContent = s < 1 ? "now" : s < 120 ? Math.round(s) + " s ago" :
        s < 7200 ? Math.round(s / 60) + " min ago" : s < 172800 ? Math.round(s / 3600) + " h ago" :
        t.getAttribute("datetime");
      t.title = t.getAttribute("datetime");
    });
  }
  ago();
  setInterval(ago, 1000);
  if (!body.dataset.live || !window.EventSource) return;
  window.edgelinePatches = 0;
  var lost = null;
  function apply(patches) {
    patches.forEach(function (p) {
      var el = document.getElementById(p.id);
      if (el) {
        el.outerHTML = p.html;
      } else if (p.into) {
        var box = document.getElementById(p.into);
        if (!box) return;
        var t = document.createElement("template");
        t.innerHTML = p.html;
        var row = t.content.firstElementChild;
        if (box.dataset.group) {  // a filtered page takes new rows of its group only
          var groups = row && row.dataset.groups ? row.dataset.groups.split(" ") : [];
          if (groups.indexOf(box.dataset.group) < 0) return;
        }
        if (box.dataset.device && (!row || row.dataset.device !== box.dataset.device)) return;
        if (box.id === "fleet-body" && row && row.dataset.device) {
          // a new unit takes its place as the server orders them: by device, each station under its device
          var before = null;
          for (var i = 0; i < box.rows.length && !before; i++) {
            var r = box.rows[i], d = r.dataset.device || "";
            if (d > row.dataset.device || (d === row.dataset.device &&
                (r.dataset.station || "") > (row.dataset.station || ""))) before = r;
          }
          if (before) { before.insertAdjacentHTML("beforebegin", p.html); return; }
        }
        box.insertAdjacentHTML(p.where || "beforeend", p.html);
      }
    });
    window.edgelinePatches += patches.length;
    var fleet = document.getElementById("fleet-body");
    if (fleet && fleet.dataset.group) {  // the live summary is the whole fleet's: mark this page's line
      document.querySelectorAll("#fleet-summary a[href^='/?group=']").forEach(function (a) {
        a.classList.toggle("here", new URLSearchParams(a.search).get("group") === fleet.dataset.group);
      });
    }
    ago();
  }
  var es = new EventSource("/events");
  es.addEventListener("patch", function (ev) { apply(JSON.parse(ev.data)); });
  es.addEventListener("resync", function () { location.reload(); });
  es.addEventListener("open", function () {
    if (lost) { lost.remove(); lost = null; }
  });
  es.addEventListener("error", function () {
    if (lost) return;
    lost = document.createElement("div");
    lost.className = "banner down";
    lost.id = "console-lost";
    lost.textContent = "The console is unreachable: this page shows what it last knew. Reconnecting.";
    document.querySelector("main").prepend(lost);
  });
})();
