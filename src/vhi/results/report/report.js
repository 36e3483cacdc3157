// The session table: rows from the JSON data block, a page at a time; sort by a column
// (click its title), filter by site, state and text.
(function () {
  "use strict";
  const table = document.getElementById("session-table");
  const block = document.getElementById("session-data");
  if (!table || !block) { return; }
  const data = JSON.parse(block.textContent);
  const F = Object.fromEntries(data.fields.map((f, i) => [f, i]));
  const all = data.rows;
  const pageRows = Number(table.dataset.pageRows) || 100;
  const body = table.tBodies[0];
  const $ = (id) => document.getElementById(id);
  const site = $("filter-site"), state = $("filter-state"), text = $("filter-text");
  let order = all.slice(), shown = order, page = 0, texts = null;
  const ESC = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  const td = (css, html) => '<td class="' + css + '">' + html + "</td>";
  function rowHtml(r) {
    const key = r[F.site] + "/" + r[F.subject] + "/" + r[F.session];
    const img = r[F.qc_image], before = r[F.qc_before_cleaning];
    const qc = img ? '<a href="' + esc(img) + '"><img class="qc" src="' + esc(img) +
      '" loading="lazy" alt="QC image of ' + esc(key) + '"></a>' +
      (before ? '<a class="before" href="' + esc(before) + '">before cleaning</a>' : "")
      : '<span class="noimg">no image</span>';
    return '<tr data-site="' + esc(r[F.site]) + '" data-state="' + esc(r[F.state]) +
      '" data-key="' + esc(key) + '">' + td("qc", qc) +
      ["site", "subject", "session", "timepoint"].map((f) => td("", esc(r[F[f]]))).join("") +
      td("", '<span class="state state-' + esc(r[F.state]) + '">' + esc(r[F.state]) + "</span>") +
      td("", esc(r[F.readers])) + td("", esc(r[F.cleaned_by])) +
      td(r[F.overdue] ? "due overdue" : "due", esc(r[F.due]) + (r[F.overdue] ? " (overdue)" : "")) +
      td("num vhi", esc(r[F.vhi_ml])) +
      ["proposal_ml", "dice_cleaned_vs_proposal", "removed_voxels", "added_voxels"]
        .map((f) => td("num", esc(r[F[f]]))).join("") +
      td("", esc(r[F.reference_mode])) + td("reason", esc(r[F.reason]) + (r[F.viewer] ?
        ' <a class="viewer" href="' + esc(r[F.viewer]) + '">open in the viewer</a>' : "")) + "</tr>";
  }
  function draw() {
    const pages = Math.max(1, Math.ceil(shown.length / pageRows));
    page = Math.min(page, pages - 1);
    body.innerHTML = shown.slice(page * pageRows, (page + 1) * pageRows).map(rowHtml).join("");
    $("filter-count").textContent = shown.length + " of " + all.length + " sessions shown";
    $("page-info").textContent = "page " + (page + 1) + " of " + pages;
    $("page-prev").disabled = page === 0;
    $("page-next").disabled = page >= pages - 1;
  }
  function filter() {
    const s = site.value, st = state.value, q = text.value.trim().toLowerCase();
    if (q && !texts) { texts = new Map(all.map((r) => [r, r.slice(0, F.reason + 1).join(" ").toLowerCase()])); }
    shown = order.filter((r) => (!s || r[F.site] === s) && (!st || r[F.state] === st) &&
      (!q || texts.get(r).indexOf(q) >= 0));
    page = 0;
    draw();
  }
  function sortBy(th, field, numeric) {
    const up = th.getAttribute("aria-sort") !== "ascending";
    Array.from(th.parentNode.cells).forEach((c) => c.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    const keyed = all.map((r, i) => ({r: r, i: i,
      v: numeric ? parseFloat(r[field]) : String(r[field]).toLowerCase()}));
    keyed.sort((a, b) => {
      let d;
      if (numeric) {  // empty and "–" cells last, whichever the direction
        const na = isNaN(a.v), nb = isNaN(b.v);
        if (na || nb) { return (na - nb) || a.i - b.i; }
        d = a.v - b.v;
      } else {
        d = a.v < b.v ? -1 : a.v > b.v ? 1 : 0;
      }
      return (up ? d : -d) || a.i - b.i;
    });
    order = keyed.map((k) => k.r);
    filter();
  }
  Array.from(table.tHead.rows[0].cells).forEach((th, col) => {
    if (col === 0) { return; }  // the QC thumbnail
    th.classList.add("sortable");
    th.addEventListener("click", () => sortBy(th, col - 1, th.classList.contains("num")));
  });
  site.addEventListener("change", filter);
  state.addEventListener("change", filter);
  text.addEventListener("input", filter);
  $("page-prev").addEventListener("click", () => { page -= 1; draw(); });
  $("page-next").addEventListener("click", () => { page += 1; draw(); });
  $("filters").hidden = false;
  filter();
}());
