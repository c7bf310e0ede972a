// The report's behaviour: draws the plotly figures embedded as JSON, and runs the PIE gallery
// (class, population and annotation filters, sort, pages) over the embedded gallery data with plain DOM.
(function () {
  "use strict";

  const figures = JSON.parse(document.getElementById("figures").textContent);
  for (const div of document.querySelectorAll("[data-figure]")) {
    const fig = figures[div.dataset.figure];
    Plotly.newPlot(div, fig.data, fig.layout, { responsive: true, displaylogo: false });
  }

  const g = JSON.parse(document.getElementById("gallery-data").textContent);
  // one entry: [key index, true label, population, dense mode, pruned mode, dense share,
  //             pruned share, l1 distance, cie rank, tie-decided]
  const KEY = 0, LABEL = 1, POP = 2, DENSE = 3, PRUNED = 4, DSHARE = 5, PSHARE = 6, L1 = 7,
    RANK = 8, TIE = 9;
  const state = { cls: "", pop: "", ann: "", sort: "l1", page: 0 };
  const grid = document.getElementById("gallery-grid");
  const className = (c) => g.classes[String(c)] ?? String(c);
  const pct = (x) => (100 * x).toFixed(0) + "%";

  function option(select, value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    select.appendChild(o);
  }

  const perClass = new Map();
  for (const e of g.entries) perClass.set(e[LABEL], (perClass.get(e[LABEL]) || 0) + 1);
  const classSelect = document.getElementById("filter-class");
  [...perClass.keys()]
    .sort((a, b) => className(a).localeCompare(className(b)))
    .forEach((c) => option(classSelect, String(c), `${className(c)} (${perClass.get(c)})`));
  const popSelect = document.getElementById("filter-population");
  g.populations.forEach((p, i) => option(popSelect, String(i), p));
  // annotations (pie annotate): g.keyAnnotations[key index] lists indices into g.annotations
  const perAnnotation = new Map();
  for (const e of g.entries)
    for (const a of g.keyAnnotations[e[KEY]]) perAnnotation.set(a, (perAnnotation.get(a) || 0) + 1);
  const annSelect = document.getElementById("filter-annotation");
  g.annotations.forEach((a, i) => {
    if (perAnnotation.has(i)) option(annSelect, String(i), `${a} (${perAnnotation.get(i)})`);
  });

  const sorters = {
    l1: (a, b) => b[L1] - a[L1] || g.keys[a[KEY]].localeCompare(g.keys[b[KEY]]) || a[POP] - b[POP],
    class: (a, b) => className(a[LABEL]).localeCompare(className(b[LABEL])) || b[L1] - a[L1],
    key: (a, b) => g.keys[a[KEY]].localeCompare(g.keys[b[KEY]]) || a[POP] - b[POP],
  };

  function selected() {
    return g.entries
      .filter((e) => (state.cls === "" || String(e[LABEL]) === state.cls) &&
                     (state.pop === "" || String(e[POP]) === state.pop) &&
                     (state.ann === "" || g.keyAnnotations[e[KEY]].includes(Number(state.ann))))
      .sort(sorters[state.sort]);
  }

  function line(text, cls) {
    const div = document.createElement("div");
    div.textContent = text;
    if (cls) div.className = cls;
    return div;
  }

  function card(e) {
    const fig = document.createElement("figure");
    fig.className = "card";
    const key = g.keys[e[KEY]];
    fig.dataset.key = key;
    const src = g.images[e[KEY]];
    if (src) {
      const img = document.createElement("img");
      img.src = src;
      img.alt = key;
      fig.appendChild(img);
    } else {
      fig.appendChild(line("no image", "no-image"));
    }
    const cap = document.createElement("figcaption");
    cap.appendChild(line(`true: ${className(e[LABEL])}`));
    cap.appendChild(line(`dense: ${className(e[DENSE])} (${pct(e[DSHARE])})`));
    cap.appendChild(line(`pruned: ${className(e[PRUNED])} (${pct(e[PSHARE])})`));
    cap.appendChild(line(`${g.populations[e[POP]]} · L1 ${e[L1].toFixed(2)} · rank ${e[RANK]}`));
    if (e[TIE]) cap.appendChild(line("mode decided by a tie-break", "tie"));
    for (const a of g.keyAnnotations[e[KEY]]) cap.appendChild(line(g.annotations[a], "note"));
    cap.appendChild(line(key, "key"));
    fig.appendChild(cap);
    return fig;
  }

  function render() {
    const rows = selected();
    const pages = Math.max(1, Math.ceil(rows.length / g.pageSize));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * g.pageSize;
    grid.replaceChildren(...rows.slice(start, start + g.pageSize).map(card));
    document.getElementById("gallery-count").textContent = `${rows.length} entries`;
    document.getElementById("page-info").textContent = `page ${state.page + 1} of ${pages}`;
    document.getElementById("page-prev").disabled = state.page === 0;
    document.getElementById("page-next").disabled = state.page >= pages - 1;
  }

  function on(id, field) {
    document.getElementById(id).addEventListener("change", (ev) => {
      state[field] = ev.target.value;
      state.page = 0;
      render();
    });
  }
  on("filter-class", "cls");
  on("filter-population", "pop");
  on("filter-annotation", "ann");
  on("sort", "sort");
  document.getElementById("page-prev").addEventListener("click", () => { state.page--; render(); });
  document.getElementById("page-next").addEventListener("click", () => { state.page++; render(); });
  render();
})();
