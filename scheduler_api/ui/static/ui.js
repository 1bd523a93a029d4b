// scheduler-api dashboard: progressive enhancement only (every page works without it).
// 1. <time datetime="...Z"> is shown in the browser's time zone, UTC stays in its title.
// 2. The trigger form's cron and time zone fields show a live preview (GET /ui/cron-preview).
(function () {
  "use strict";
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) {
        el.textContent = d.toLocaleString();
        el.title = el.getAttribute("datetime") + " (UTC)";
      }
    });
  }
  function text(tag, value) {
    var el = document.createElement(tag);
    el.textContent = value;
    return el;
  }
  function cronPreview() {
    var cron = document.getElementById("f-cron");
    var zone = document.getElementById("f-timezone");
    var box = document.getElementById("cron-preview");
    if (!cron || !box) return;
    var timer = null;
    function update() {
      if (!cron.value.trim()) { box.replaceChildren(); return; }
      var q = "cron=" + encodeURIComponent(cron.value) + "&timezone=" + encodeURIComponent(zone ? zone.value : "");
      fetch("/ui/cron-preview?" + q, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (body) {
          box.replaceChildren();
          if (!body.success) {
            var msg = (body.details || []).map(function (d) { return d.message; }).join("; ") || body.error;
            var p = text("p", msg);
            p.className = "field-error";
            box.appendChild(p);
            return;
          }
          box.appendChild(text("p", body.description));
          var ol = document.createElement("ol");
          body.next_runs.forEach(function (iso) {
            var li = document.createElement("li");
            var t = text("time", iso);
            t.setAttribute("datetime", iso);
            li.appendChild(t);
            ol.appendChild(li);
          });
          box.appendChild(ol);
          localTimes(box);
        })
        .catch(function () {});
    }
    function later() { clearTimeout(timer); timer = setTimeout(update, 250); }
    cron.addEventListener("input", later);
    if (zone) zone.addEventListener("input", later);
    update();
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    cronPreview();
  });
})();
