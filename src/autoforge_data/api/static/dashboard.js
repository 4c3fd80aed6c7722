// The dashboard's behaviour: poll /api/v1/stats, draw small SVG charts, run searches.
// Every value from the server goes into the page through textContent or numeric SVG
// attributes: never innerHTML, so a prompt title like "<script>" shows as text.
"use strict";

(function () {
  const KEY = "afdb.apiKey";
  const POINTS = 60;
  const body = document.body;
  const refreshMs = Math.max(1000, Number(body.dataset.refresh) || 5000);

  function $(id) { return document.getElementById(id); }
  function setText(id, value) { const el = $(id); if (el) el.textContent = value; }

  function ms(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    if (value < 1) return value.toFixed(3) + " ms";
    if (value < 100) return value.toFixed(1) + " ms";
    return Math.round(value) + " ms";
  }
  function bytes(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return (i ? value.toFixed(1) : String(value)) + " " + units[i];
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (!isFinite(seconds)) return "never";
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }
  function ratio(value) { return value === null || value === undefined ? "–" : value.toFixed(3); }

  function series(history, key) {
    return history.map(function (p) {
      const v = p[key];
      return v === null || v === undefined || !isFinite(v) ? null : v;
    });
  }

  // A polyline over the finite points, scaled to the chart's 300x60 box (fixed max for ratios).
  function draw(id, series, fixedMax) {
    const svg = $(id);
    if (!svg) return;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const values = series.filter(function (v) { return v !== null; });
    if (!values.length) return;
    const max = fixedMax || Math.max.apply(null, values) || 1;
    const step = 300 / Math.max(1, POINTS - 1);
    const offset = POINTS - series.length;
    const pts = [];
    series.forEach(function (v, i) {
      if (v === null) return;
      const x = (offset + i) * step;
      const y = 58 - (Math.min(v, max) / max) * 56;
      pts.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("class", "line");
    svg.appendChild(line);
    const last = pts[pts.length - 1].split(",");
    const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    dot.setAttribute("cx", last[0]);
    dot.setAttribute("cy", last[1]);
    dot.setAttribute("r", "2");
    dot.setAttribute("class", "dot");
    svg.appendChild(dot);
    const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
    label.setAttribute("x", "2");
    label.setAttribute("y", "10");
    label.setAttribute("class", "axis");
    label.textContent = "max " + (fixedMax ? fixedMax : max.toFixed(max < 10 ? 2 : 0));
    svg.appendChild(label);
  }

  function badge(el, status) {
    el.textContent = status;
    el.className = "badge badge-" + String(status).replace(/[^a-z]/g, "");
  }

  function detail(check) {
    const parts = [];
    Object.keys(check).forEach(function (key) {
      if (key === "status") return;
      parts.push(key + "=" + String(check[key]));
    });
    return parts.join(" ");
  }

  function renderHealth(health) {
    badge($("status"), health.status);
    const tbody = $("health").querySelector("tbody");
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    Object.keys(health.checks).forEach(function (name) {
      const check = health.checks[name];
      const tr = document.createElement("tr");
      tr.dataset.component = name;
      const td1 = document.createElement("td"); td1.textContent = name;
      const td2 = document.createElement("td"); const b = document.createElement("span");
      badge(b, check.status); td2.appendChild(b);
      const td3 = document.createElement("td"); td3.textContent = detail(check);
      tr.appendChild(td1); tr.appendChild(td2); tr.appendChild(td3);
      tbody.appendChild(tr);
    });
  }

  function render(stats) {
    renderHealth(stats.health);
    const req = stats.requests;
    setText("req-p50", ms(req.p50_ms));
    setText("req-p99", ms(req.p99_ms));
    setText("req-5xx", String(req.errors_5xx));
    const history = (stats.history || []).slice(-POINTS);
    const latest = history.length ? history[history.length - 1] : null;
    setText("req-rate", latest ? latest.request_rate.toFixed(1) : "–");
    setText("db-p50", ms(stats.statements.p50_ms));
    setText("db-p99", ms(stats.statements.p99_ms));
    setText("db-size", bytes(stats.storage.database_bytes));
    setText("db-wal", bytes(stats.storage.wal_bytes));
    setText("cache-ratio", ratio(stats.cache.hit_ratio));
    setText("cache-hits", String(stats.cache.hits));
    setText("cache-misses", String(stats.cache.misses));
    setText("cache-errors", String(stats.cache.errors));
    setText("search-p99", ms(stats.search.p99_ms));
    setText("index-vectors", stats.index.vectors === null ? "–" : String(stats.index.vectors));
    setText("index-lag", stats.index.journal_lag === null ? "–" : String(stats.index.journal_lag));
    setText("backup-age", stats.backup ? duration(stats.backup.age_s) : "n/a");
    draw("chart-req", series(history, "request_p99_ms"));
    draw("chart-db", series(history, "statement_p99_ms"));
    draw("chart-cache", series(history, "hit_ratio"), 1);
    draw("chart-search", series(history, "search_p99_ms"));
    setText("updated", "updated " + new Date(stats.time * 1000).toLocaleTimeString());
  }

  function poll() {
    if (document.hidden) {  // a background tab costs the server nothing
      setTimeout(poll, refreshMs);
      return;
    }
    fetch("/api/v1/stats", { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(render)
      .catch(function () { badge($("status"), "unreachable"); })
      .finally(function () { setTimeout(poll, refreshMs); });
  }

  // --- search ---------------------------------------------------------------------------------

  function apiKey() { return sessionStorage.getItem(KEY) || ""; }
  function headers() {
    const h = { Accept: "application/json" };
    if (apiKey()) h.Authorization = "Bearer " + apiKey();
    return h;
  }
  function showKeyForm(message) {
    $("key-form").classList.remove("hidden");
    if (message) setText("search-message", message);
  }

  function errorText(status, payload) {
    const err = payload && payload.error;
    if (err && err.message) return err.message + (err.hint ? " (" + err.hint + ")" : "");
    return "search failed (HTTP " + status + ")";
  }

  function resultItem(hit, rank) {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.promptId = String(hit.prompt_id);
    const head = document.createElement("div");
    head.className = "result-head";
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = hit.title || String(hit.prompt_id);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = "#" + rank + " · score " + Number(hit.score).toFixed(4) + " · v" + hit.version;
    head.appendChild(title); head.appendChild(score);
    const snippet = document.createElement("p");
    snippet.className = "snippet";
    highlight(snippet, hit.snippet || "");
    li.appendChild(head); li.appendChild(snippet);
    if (!hit.title) fillTitle(hit.prompt_id, title);
    return li;
  }

  // Keyword matches come back as **word**: show them as <mark> elements built from text nodes.
  function highlight(el, text) {
    text.split("**").forEach(function (part, i) {
      if (!part) return;
      if (i % 2 === 1) {
        const mark = document.createElement("mark");
        mark.textContent = part;
        el.appendChild(mark);
      } else {
        el.appendChild(document.createTextNode(part));
      }
    });
  }

  // Search hits may carry no title: read it from the prompt (best effort).
  function fillTitle(promptId, el) {
    fetch("/api/v1/prompts/" + encodeURIComponent(promptId), { headers: headers() })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) { if (p && p.title) el.textContent = p.title; })
      .catch(function () {});
  }

  function search(event) {
    event.preventDefault();
    const q = $("q").value.trim();
    if (!q) return;
    const params = new URLSearchParams({ q: q, k: $("k").value, mode: $("mode").value });
    const list = $("results");
    setText("search-message", "searching…");
    fetch("/api/v1/search?" + params.toString(), { headers: headers() })
      .then(function (r) {
        return r.json().catch(function () { return null; }).then(function (payload) {
          return { status: r.status, payload: payload };
        });
      })
      .then(function (res) {
        while (list.firstChild) list.removeChild(list.firstChild);
        if (res.status === 401 || res.status === 403) {
          showKeyForm(errorText(res.status, res.payload));
          return;
        }
        if (res.status !== 200 || !res.payload) {
          setText("search-message", errorText(res.status, res.payload));
          return;
        }
        const items = res.payload.items || res.payload.results || res.payload.matches || [];
        items.forEach(function (hit, i) { list.appendChild(resultItem(hit, i + 1)); });
        setText("search-message", items.length + " result(s) · " + (res.payload.mode || "") +
          (res.payload.model ? " · " + res.payload.model : ""));
      })
      .catch(function () { setText("search-message", "search failed: the server did not answer"); });
  }

  function useKey(event) {
    event.preventDefault();
    const value = $("api-key").value.trim();
    if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
    $("api-key").value = "";
    $("key-form").classList.add("hidden");
    setText("search-message", value ? "key set for this tab" : "key cleared");
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("search-form").addEventListener("submit", search);
    $("key-form").addEventListener("submit", useKey);
    if (body.dataset.auth === "required" && !apiKey()) showKeyForm("this API requires a key to search");
    poll();
  });
})();
