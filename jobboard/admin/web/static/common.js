// Shared by the dashboard and the job page: formatting, DOM building, the API and the live stream.
"use strict";

const Board = (() => {
  const TOKEN_KEY = "jobboard.adminToken";

  /** Build an element: el("td", {class: "num"}, "3", child, ...). */
  function el(tag, attrs, ...children) {
    const svg = ["svg", "g", "rect", "line", "text", "title"].includes(tag);
    const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
                     : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** A compact duration: 45ms, 12.3s, 3m05s, 2h03m, 1d04h (as the jobboard command prints). */
  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
    const sign = seconds < 0 ? "-" : "";
    const s = Math.abs(seconds);
    if (s < 1) return `${sign}${Math.round(s * 1000)}ms`;
    if (s < 60) return `${sign}${s.toFixed(1)}s`;
    const whole = Math.floor(s);
    const pad = (n) => String(n).padStart(2, "0");
    if (whole < 3600) return `${sign}${Math.floor(whole / 60)}m${pad(whole % 60)}s`;
    if (whole < 86400) return `${sign}${Math.floor(whole / 3600)}h${pad(Math.floor(whole % 3600 / 60))}m`;
    return `${sign}${Math.floor(whole / 86400)}d${pad(Math.floor(whole % 86400 / 3600))}h`;
  }

  /** HH:MM:SS in UTC of a board timestamp (seconds). */
  function clock(ts) {
    if (!ts) return "–";
    return new Date(ts * 1000).toISOString().slice(11, 19);
  }

  /** ISO 8601 UTC with milliseconds. */
  function isoTime(ts) {
    if (!ts) return "–";
    return new Date(ts * 1000).toISOString().replace("T", " ").replace("Z", " UTC");
  }

  function rate(perMinute) {
    if (!perMinute) return "0";
    return perMinute < 10 ? perMinute.toFixed(1) : Math.round(perMinute).toString();
  }

  function shortId(id) { return id ? (id.length > 14 ? id.slice(0, 12) + "…" : id) : "–"; }

  function stateBadge(state) {
    const label = state === "claimed" ? "running" : state;
    return el("span", {class: `badge state-${state}`}, label || "–");
  }

  function jobLink(id, name) {
    return el("a", {class: "job-link", href: `/jobs/${encodeURIComponent(id)}`, title: id},
      el("span", {class: "job-name"}, name || shortId(id)),
      el("span", {class: "job-id mono"}, shortId(id)));
  }

  /** Replace a table body's rows; an empty list shows one muted "none" row. */
  function fillTable(table, rows, empty) {
    const body = table.tBodies[0];
    const columns = table.tHead.rows[0].cells.length;
    body.replaceChildren(...(rows.length ? rows
      : [el("tr", {class: "empty"}, el("td", {colspan: columns}, empty || "none"))]));
  }

  function adminToken() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  function setAdminToken(token) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  }

  /** Call the JSON API; rejects with the server's error message. */
  async function api(path, options) {
    const opts = Object.assign({headers: {}}, options || {});
    if (opts.method === "POST") {
      opts.headers["Content-Type"] = "application/json";
      const token = adminToken();
      if (token) opts.headers["Authorization"] = `Bearer ${token}`;
    }
    const response = await fetch(path, opts);
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  /** The live connection: status pill, problem banner and handlers per event name. */
  function live(path, handlers) {
    const status = document.getElementById("status");
    const banner = document.getElementById("banner");
    const show = (state, text) => { status.dataset.state = state; status.textContent = text; };
    let source = null;
    function connect() {
      source = new EventSource(path);
      source.addEventListener("open", () => show("live", "live"));
      source.addEventListener("error", () => show("reconnecting", "reconnecting…"));
      source.addEventListener("problem", (e) => {
        const data = JSON.parse(e.data);
        banner.textContent = data.error;
        banner.hidden = false;
        show("problem", "board unreachable");
      });
      for (const [name, handler] of Object.entries(handlers)) {
        source.addEventListener(name, (e) => {
          if (name === "overview") banner.hidden = true;
          if (status.dataset.state !== "live") show("live", "live");
          handler(JSON.parse(e.data));
        });
      }
    }
    connect();
    return () => source && source.close();
  }

  /** Header: board label and read-only / admin mode (with the token button). */
  async function header() {
    const config = await api("/api/config");
    document.getElementById("board-label").textContent = config.board;
    const mode = document.getElementById("mode");
    if (!config.admin) {
      mode.replaceChildren(el("span", {class: "pill"}, "read-only"));
    } else {
      const button = el("button", {class: "pill pill-admin", type: "button"});
      const label = () => { button.textContent = adminToken() ? "admin: token set" : "admin: set token"; };
      button.addEventListener("click", () => {
        const token = window.prompt("Admin token (kept for this browser tab only; empty to forget):", "");
        if (token !== null) { setAdminToken(token.trim()); label(); }
      });
      label();
      mode.replaceChildren(button);
    }
    return config;
  }

  return {el, duration, clock, isoTime, rate, shortId, stateBadge, jobLink, fillTable, api, live,
          header, adminToken};
})();
