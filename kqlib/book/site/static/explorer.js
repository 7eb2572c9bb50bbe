/* kq fact explorer: a static, offline table of every (model, method, fact) of a book run.
 * Vanilla JavaScript, no dependencies: reads window.KQ_EXPLORER_DATA (explorer-data.js, written by
 * kqlib/book/site/explorer.py) and renders into #kq-explorer. Search, filters and sorting are client-side; a fact's
 * detail opens from its row (or from the URL: #fact=<model>|<method>|<fact_id>). */
(function () {
  "use strict";

  var COLUMNS = [
    {key: "model", label: "model"},
    {key: "method", label: "method"},
    {key: "relation", label: "relation"},
    {key: "subject", label: "fact (subject \u2192 object)"},
    {key: "n_queries", label: "queries", num: true},
    {key: "cs1", label: "CS1", num: true, digits: 3},
    {key: "cs2", label: "CS2", num: true, digits: 3},
    {key: "class_static", label: "class, static \u03b8"},
    {key: "class_otsu", label: "class, Otsu \u03b8"},
    {key: "mean_set_size", label: "mean |KN set|", num: true, digits: 1},
    {key: "p_min", label: "p(answer)", num: true}
  ];
  var FILTERS = [
    {key: "model", label: "model", all: "all models"},
    {key: "method", label: "method", all: "all methods"},
    {key: "relation", label: "relation", all: "all relations"},
    {key: "class_static", label: "class at the static \u03b8", all: "all classes (static \u03b8)"},
    {key: "class_otsu", label: "class at Otsu's \u03b8", all: "all classes (Otsu \u03b8)"}
  ];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function svgEl(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || v === "") return "\u2013";
    if (typeof v === "number") {
      if (digits !== undefined) return v.toFixed(digits);
      if (Number.isInteger(v)) return String(v);
      var a = Math.abs(v);
      return (a !== 0 && (a < 1e-3 || a >= 1e4)) ? v.toExponential(2) : v.toFixed(3);
    }
    if (typeof v === "boolean") return v ? "yes" : "no";
    return String(v);
  }

  function cellText(f, col) {
    if (col.key === "subject") return (f.subject || "?") + " \u2192 " + (f.obj || "?");
    if (col.key === "p_min") return fmt(f.p_min) + " \u2013 " + fmt(f.p_max);
    return fmt(f[col.key], col.digits);
  }

  function App(root, data) {
    this.root = root;
    this.data = data;
    this.facts = data.facts || [];
    this.byKey = {};
    var self = this;
    this.facts.forEach(function (f) {
      self.byKey[f.key] = f;
      var d = (data.details || {})[f.key] || {};
      f._search = [f.model, f.method, f.relation, f.subject, f.obj, f.fact_id, f.class_static, f.class_otsu]
        .concat((d.queries || []).map(function (q) { return q.prompt; }))
        .join(" \u0001 ").toLowerCase();
    });
    this.sort = {key: null, dir: 1};
    this.build();
    this.render();
    window.addEventListener("hashchange", function () { self.route(); });
    this.route();
    root.setAttribute("data-kq-ready", "1");
  }

  App.prototype.build = function () {
    var self = this;
    var controls = el("div", {className: "kq-controls"});
    this.search = el("input", {type: "search", id: "kq-search", placeholder: "search subject, object, relation, query text\u2026",
                               "aria-label": "search facts"});
    this.search.addEventListener("input", function () { self.render(); });
    controls.appendChild(this.search);
    this.selects = {};
    FILTERS.forEach(function (flt) {
      var values = {};
      self.facts.forEach(function (f) { if (f[flt.key] !== null && f[flt.key] !== undefined) values[f[flt.key]] = 1; });
      var sel = el("select", {id: "kq-filter-" + flt.key, "aria-label": "filter by " + flt.label},
                   [el("option", {value: "", text: flt.all})]);
      Object.keys(values).sort().forEach(function (v) { sel.appendChild(el("option", {value: v, text: v})); });
      sel.addEventListener("change", function () { self.render(); });
      self.selects[flt.key] = sel;
      controls.appendChild(sel);
    });
    this.count = el("span", {id: "kq-count", className: "kq-count"});
    controls.appendChild(this.count);
    this.root.appendChild(controls);

    var thead = el("thead");
    var tr = el("tr");
    this.headers = {};
    COLUMNS.forEach(function (col) {
      var th = el("th", {"data-col": col.key, scope: "col", title: "sort by " + col.label, tabindex: "0"}, [col.label]);
      th.addEventListener("click", function () { self.sortBy(col.key); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") self.sortBy(col.key); });
      self.headers[col.key] = th;
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    this.tbody = el("tbody");
    var wrap = el("div", {className: "kq-table-wrap"}, [el("table", {id: "kq-facts", className: "kq-table"}, [thead, this.tbody])]);
    this.root.appendChild(wrap);
    this.detail = el("section", {id: "kq-detail", className: "kq-detail", hidden: "hidden"});
    this.root.appendChild(this.detail);
  };

  App.prototype.sortBy = function (key) {
    this.sort = {key: key, dir: this.sort.key === key ? -this.sort.dir : 1};
    this.render();
  };

  App.prototype.visible = function () {
    var self = this;
    var terms = this.search.value.toLowerCase().split(/\s+/).filter(Boolean);
    var rows = this.facts.filter(function (f) {
      for (var k in self.selects) {
        var v = self.selects[k].value;
        if (v && String(f[k]) !== v) return false;
      }
      return terms.every(function (t) { return f._search.indexOf(t) >= 0; });
    });
    if (this.sort.key) {
      var key = this.sort.key, dir = this.sort.dir;
      rows = rows.slice().sort(function (a, b) {
        var x = a[key], y = b[key];
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        if (typeof x === "number" && typeof y === "number") return dir * (x - y);
        return dir * String(x).localeCompare(String(y));
      });
    }
    return rows;
  };

  App.prototype.render = function () {
    var self = this;
    var rows = this.visible();
    this.tbody.textContent = "";
    rows.forEach(function (f) {
      var tr = el("tr", {"data-key": f.key, className: f.key === self.current ? "kq-selected" : ""});
      COLUMNS.forEach(function (col) {
        var td = el("td", {"data-col": col.key, className: col.num ? "kq-num" : (col.key === "subject" ? "" : "kq-nowrap")});
        if (col.key === "subject") {
          td.appendChild(el("a", {href: "#fact=" + encodeURIComponent(f.key), className: "kq-open"}, [cellText(f, col)]));
        } else {
          td.textContent = cellText(f, col);
          if (col.key.indexOf("class") === 0 && f[col.key]) td.className = "kq-nowrap kq-class-" + f[col.key];
        }
        tr.appendChild(td);
      });
      tr.addEventListener("click", function (e) {
        if (e.target.tagName !== "A") window.location.hash = "fact=" + encodeURIComponent(f.key);
      });
      self.tbody.appendChild(tr);
    });
    this.count.textContent = rows.length + " of " + this.facts.length + " facts";
    Object.keys(this.headers).forEach(function (k) {
      var th = self.headers[k];
      th.setAttribute("aria-sort", self.sort.key === k ? (self.sort.dir > 0 ? "ascending" : "descending") : "none");
    });
  };

  App.prototype.route = function () {
    var m = /^#fact=(.*)$/.exec(window.location.hash);
    if (!m) return;
    var key = decodeURIComponent(m[1]);
    if (this.byKey[key]) this.open(key);
  };

  function table(columns, rows, id) {
    var t = el("table", {className: "kq-table kq-small"});
    if (id) t.id = id;
    t.appendChild(el("thead", {}, [el("tr", {}, columns.map(function (c) { return el("th", {scope: "col"}, [c]); }))]));
    var body = el("tbody");
    rows.forEach(function (r) {
      body.appendChild(el("tr", {}, r.map(function (v) {
        return el("td", {className: typeof v === "number" ? "kq-num" : ""}, [fmt(v)]);
      })));
    });
    t.appendChild(body);
    return el("div", {className: "kq-table-wrap"}, [t]);
  }

  function heatmap(matrix, labels) {
    var n = matrix.length, cell = n > 12 ? 28 : 44, pad = 56;
    var size = pad + n * cell;
    var svg = svgEl("svg", {width: size, height: size, viewBox: "0 0 " + size + " " + size, id: "kq-jaccard",
                            role: "img", "aria-label": "pairwise Jaccard index of the queries' KN sets"});
    for (var i = 0; i < n; i++) {
      var lab = svgEl("text", {x: pad - 6, y: pad + i * cell + cell / 2 + 4, "text-anchor": "end", "font-size": 11});
      lab.textContent = labels[i];
      svg.appendChild(lab);
      var top = svgEl("text", {x: pad + i * cell + cell / 2, y: pad - 8, "text-anchor": "middle", "font-size": 11});
      top.textContent = labels[i];
      svg.appendChild(top);
      for (var j = 0; j < n; j++) {
        var v = matrix[i][j];
        var shade = v === null ? 255 : Math.round(255 - 200 * v);
        var rect = svgEl("rect", {x: pad + j * cell, y: pad + i * cell, width: cell - 1, height: cell - 1,
                                  fill: v === null ? "#eee" : "rgb(" + shade + "," + Math.round(shade * 0.9 + 20) + ",255)",
                                  "class": "kq-cell", "data-i": i, "data-j": j, "data-value": v === null ? "" : v});
        var tip = svgEl("title");
        tip.textContent = labels[i] + " vs " + labels[j] + ": J = " + fmt(v);
        rect.appendChild(tip);
        svg.appendChild(rect);
        if (cell >= 40) {
          var t = svgEl("text", {x: pad + j * cell + cell / 2, y: pad + i * cell + cell / 2 + 4, "text-anchor": "middle",
                                 "font-size": 10, fill: v !== null && v > 0.6 ? "#fff" : "#222"});
          t.textContent = v === null ? "" : v.toFixed(2);
          svg.appendChild(t);
        }
      }
    }
    return svg;
  }

  App.prototype.open = function (key) {
    var f = this.byKey[key];
    var d = (this.data.details || {})[key] || {queries: [], jaccard: [], appearances: []};
    this.current = key;
    this.render();
    var box = this.detail;
    box.textContent = "";
    box.removeAttribute("hidden");
    box.setAttribute("data-key", key);
    box.appendChild(el("h2", {id: "kq-detail-title"}, [(f.subject || "?") + " \u2192 " + (f.obj || "?")]));
    box.appendChild(el("p", {className: "kq-summary"}, [
      f.model + ", " + f.method + ", relation " + f.relation + ", fact " + f.fact_id + ": " + f.n_queries +
      " queries; CS1 = " + fmt(f.cs1) + ", CS2 = " + fmt(f.cs2) + ", pairwise Jaccard = " + fmt(f.pairwise) +
      "; class " + f.class_static + " at the static \u03b8 = " + fmt(f.theta_static) + " and " + fmt(f.class_otsu) +
      " at Otsu's \u03b8 = " + fmt(f.theta_otsu) + " (" + f.cs_kind + "; from chapter " + f.source + ")."]));
    var labels = d.queries.map(function (q) { return "q" + q.pattern_index; });
    box.appendChild(el("h3", {}, ["Queries"]));
    box.appendChild(table(["query", "prompt", "p(answer)", "rank", "top-1", "KNs"], d.queries.map(function (q, i) {
      return [labels[i], q.prompt + " \u2026", q.prob, q.rank, q.correct, q.n_kns];
    }), "kq-queries"));
    box.appendChild(el("h3", {}, ["Pairwise Jaccard index of the queries' KN sets"]));
    box.appendChild(el("div", {className: "kq-heatmap"}, [heatmap(d.jaccard || [], labels)]));
    box.appendChild(el("h3", {}, ["Knowledge neurons (" + f.method + ")"]));
    var sets = el("div", {id: "kq-kn-sets"});
    d.queries.forEach(function (q, i) {
      var shownNote = (q.kns || []).length < q.n_kns ? " (the " + q.kns.length + " strongest shown)" : "";
      var det = el("details", {className: "kq-kn-set"}, [el("summary", {}, [labels[i] + ": " + q.n_kns + " neurons" + shownNote + " \u2014 " + q.prompt + " \u2026"])]);
      det.appendChild(table(["layer", "neuron", "score", "score / max"], q.kns || []));
      sets.appendChild(det);
    });
    box.appendChild(sets);
    box.appendChild(el("h3", {}, ["In later chapters"]));
    if (!d.appearances.length) box.appendChild(el("p", {}, ["This fact is not used by a later chapter of this run."]));
    d.appearances.forEach(function (a) {
      var head = el("h4", {className: "kq-appearance"}, [
        el("a", {href: a.href}, [a.chapter]), ": " + a.label + (a.kn_method ? " (KNs of method " + a.kn_method + ")" : "") + " \u00b7 ",
        el("a", {href: a.data, download: ""}, ["data"])]);
      box.appendChild(head);
      box.appendChild(table(a.columns, a.rows));
    });
    if (box.scrollIntoView) box.scrollIntoView();
  };

  var REBUILD = " Rebuild the site (kq book --no-execute) to write it again.";

  // What is wrong with the data, or null: a missing or truncated explorer-data.js never sets KQ_EXPLORER_DATA
  // (a script that does not parse does not run at all); a malformed one has the wrong shape.
  function problem(data) {
    if (data === undefined) {
      return "The explorer's data file (explorer/explorer-data.js) did not load: it is missing, or damaged " +
             "(truncated, not valid JavaScript)." + REBUILD;
    }
    if (!data || typeof data !== "object" || !Array.isArray(data.facts) ||
        (data.details !== undefined && (typeof data.details !== "object" || data.details === null))) {
      return "The explorer's data file (explorer/explorer-data.js) is malformed: it has no list of facts." + REBUILD;
    }
    for (var i = 0; i < data.facts.length; i++) {
      var f = data.facts[i];
      if (!f || typeof f !== "object" || typeof f.key !== "string" || typeof f.model !== "string" ||
          typeof f.method !== "string") {
        return "The explorer's data file (explorer/explorer-data.js) is malformed: fact " + (i + 1) + " of " +
               data.facts.length + " lacks its key, model or method (" + JSON.stringify(f).slice(0, 80) + ")." +
               REBUILD;
      }
    }
    return null;
  }

  function message(root, text, cls) {
    root.appendChild(el("p", {className: cls}, [text]));
    root.setAttribute("data-kq-ready", "1");
  }

  function start() {
    var root = document.getElementById("kq-explorer");
    if (!root) return;
    var data = window.KQ_EXPLORER_DATA;
    var bad = problem(data);
    if (bad) return message(root, bad, "kq-empty kq-error");
    if (!data.facts.length) return message(root, "No facts in this build: run the chapters (kq book) first.", "kq-empty");
    try {
      window.kqExplorer = new App(root, data);
    } catch (err) {
      while (root.firstChild) root.removeChild(root.firstChild);
      message(root, "The explorer's data file (explorer/explorer-data.js) could not be shown (" + err + ")." +
              REBUILD, "kq-empty kq-error");
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
