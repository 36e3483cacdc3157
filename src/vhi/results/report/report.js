// The session table: sort by a column (click its title), filter by site, state and text.
(function () {
  "use strict";
  var table = document.getElementById("session-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var site = document.getElementById("filter-site");
  var state = document.getElementById("filter-state");
  var text = document.getElementById("filter-text");
  var count = document.getElementById("filter-count");
  var texts = null;
  function apply() {
    var s = site.value, st = state.value, q = text.value.trim().toLowerCase(), shown = 0;
    if (q && !texts) { texts = rows.map(function (r) { return r.textContent.toLowerCase(); }); }
    rows.forEach(function (r, i) {
      var ok = (!s || r.dataset.site === s) && (!st || r.dataset.state === st) &&
               (!q || texts[i].indexOf(q) >= 0);
      r.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " sessions shown";
  }
  function sortBy(th, col) {
    var up = th.getAttribute("aria-sort") !== "ascending", num = th.classList.contains("num");
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    var keyed = rows.map(function (r, i) {
      var t = r.cells[col].textContent.trim();
      return {v: num ? parseFloat(t) : t.toLowerCase(), i: i, r: r};
    });
    keyed.sort(function (a, b) {
      var x = a.v, y = b.v, d;
      if (num) {  // empty and "–" cells last, whichever the direction
        if (isNaN(x) || isNaN(y)) { d = isNaN(x) - isNaN(y); return d || a.i - b.i; }
        d = x - y;
      } else {
        d = x < y ? -1 : x > y ? 1 : 0;
      }
      return (up ? d : -d) || a.i - b.i;
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k.r); });
    body.appendChild(frag);
    rows = keyed.map(function (k) { return k.r; });
    texts = null;
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    th.addEventListener("click", function () { sortBy(th, col); });
  });
  [site, state].forEach(function (e) { e.addEventListener("change", apply); });
  text.addEventListener("input", apply);
  document.getElementById("filters").hidden = false;
  apply();
}());
