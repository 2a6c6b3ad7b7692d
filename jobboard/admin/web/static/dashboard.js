// The dashboard: totals, flows, conductors, claims, waiting and finished jobs, live events.
"use strict";

(() => {
  const {el, duration, clock, rate, stateBadge, jobLink, fillTable} = Board;
  const MAX_EVENTS = 40;
  let lastDoc = null;

  function tile(label, value, kind, testid) {
    return el("div", {class: `tile ${kind || ""}`, "data-testid": testid},
      el("div", {class: "tile-value"}, value), el("div", {class: "tile-label"}, label));
  }

  function renderTiles(doc) {
    const t = doc.totals;
    const live = doc.conductors.filter((c) => !c.stale).length;
    const stale = doc.conductors.length - live;
    const oldest = Math.max(0, ...doc.flows.map((f) => f.oldest_waiting_age || 0));
    document.getElementById("tiles").replaceChildren(
      tile("waiting", t.waiting, "t-waiting", "total-waiting"),
      tile("running", t.claimed, "t-claimed", "total-claimed"),
      tile("complete", t.complete, "t-complete", "total-complete"),
      tile("failed", t.failed, t.failed ? "t-failed" : "", "total-failed"),
      tile("trashed", t.trashed, "", "total-trashed"),
      tile("cancelled", t.cancelled, "", "total-cancelled"),
      tile(stale ? `conductors (${stale} stale)` : "conductors live", live,
           stale ? "t-warn" : "", "total-conductors"),
      tile("oldest waiting", t.waiting ? duration(oldest) : "–", "", "oldest-waiting"));
  }

  function renderFlows(doc) {
    document.getElementById("rate-hint").textContent =
      `rates per minute over the last ${duration(doc.rate_window)}`;
    const rows = doc.flows.map((f) => {
      const orphan = f.waiting > 0 && f.conductors_live === 0;
      const conductors = [el("span", {class: orphan ? "warn-text" : ""},
        orphan ? "none live" : `${f.conductors_live} live`)];
      if (f.conductors_stale) conductors.push(el("span", {class: "badge stale"}, `${f.conductors_stale} stale`));
      return el("tr", {dataset: {flow: f.flow}, class: orphan ? "row-warn" : ""},
        el("td", {class: "strong"}, f.flow),
        el("td", {class: "num", "data-col": "waiting"}, f.waiting),
        el("td", {class: "num", "data-col": "claimed"}, f.claimed),
        el("td", {class: f.failed ? "num bad" : "num", "data-col": "failed"}, f.failed),
        el("td", {class: "num"}, f.trashed),
        el("td", {class: "num", "data-col": "complete"}, f.complete),
        el("td", {class: "num"}, f.waiting ? duration(f.oldest_waiting_age) : "–"),
        el("td", {class: "num"}, rate(f.rates.posted)),
        el("td", {class: "num"}, rate(f.rates.completed)),
        el("td", {class: f.rates.failed ? "num bad" : "num"}, rate(f.rates.failed)),
        el("td", {}, conductors));
    });
    fillTable(document.getElementById("flows"), rows, "no jobs and no conductors yet");
  }

  function taskText(task) {
    if (!task) return "–";
    const of = task.total ? ` of ${task.total}` : "";
    if (task.running) return `${task.running} (${task.done}${of} done)`;
    if (task.last_done) return `after ${task.last_done} (${task.done}${of} done)`;
    return "starting";
  }

  function renderConductors(doc) {
    document.getElementById("conductor-count").textContent = doc.conductors.length;
    const rows = doc.conductors.map((c) => el("tr", {dataset: {conductor: c.name}},
      el("td", {class: "strong", title: c.name}, c.display_name),
      el("td", {}, el("span", {class: `badge ${c.stale ? "stale" : "live"}`}, c.status)),
      el("td", {class: "mono"}, c.host || "–"),
      el("td", {}, c.flows.join(", ") || "–"),
      el("td", {}, c.jobs.length ? c.jobs.map((j) => jobLink(j.id, j.name)) : el("span", {class: "muted"}, "idle")),
      el("td", {class: c.stale ? "num bad" : "num"}, `${duration(c.heartbeat_age)} ago`)));
    fillTable(document.getElementById("conductors"), rows, "no conductor registered");
  }

  function leaseCell(claim) {
    if (claim.lease_left === null) return el("span", {class: "muted"}, "session");
    const total = claim.lease_expires_at - claim.claimed_at;
    const share = total > 0 ? Math.max(0, Math.min(1, claim.lease_left / total)) : 0;
    const bar = el("span", {class: "lease-fill"});
    bar.style.width = `${Math.round(share * 100)}%`;
    return el("span", {class: `lease ${claim.lease_left <= 0 ? "expired" : ""}`},
      el("span", {class: "lease-bar"}, bar), duration(claim.lease_left));
  }

  function renderClaims(doc) {
    document.getElementById("claim-count").textContent = doc.claims.length;
    const rows = doc.claims.map((c) => el("tr", {dataset: {job: c.job}},
      el("td", {}, jobLink(c.job, c.name)),
      el("td", {}, c.flow),
      el("td", {class: "mono small", title: c.owner}, (c.owner || "–").split("@")[0]),
      el("td", {}, taskText(c.task)),
      el("td", {class: "num"}, duration(c.age)),
      el("td", {}, leaseCell(c)),
      el("td", {}, c.flags.length ? c.flags.map((f) => el("span", {class: "badge warn"}, f))
                                  : el("span", {class: "muted"}, "ok"))));
    fillTable(document.getElementById("claims"), rows, "no job is running");
  }

  function renderJobs(doc) {
    document.getElementById("waiting-count").textContent = doc.waiting_total;
    const waiting = doc.waiting.map((j) => el("tr", {dataset: {job: j.id}},
      el("td", {}, jobLink(j.id, j.name)), el("td", {}, j.flow),
      el("td", {}, el("span", {class: `prio prio-${j.priority.toLowerCase()}`}, j.priority.toLowerCase().replace("_", " "))),
      el("td", {class: "num"}, `${j.attempts}/${j.max_attempts}`),
      el("td", {class: "num"}, duration(doc.now - j.created_at))));
    fillTable(document.getElementById("waiting"), waiting, "nothing waiting");
    const recent = doc.recent.map((j) => el("tr", {dataset: {job: j.id}},
      el("td", {}, jobLink(j.id, j.name)), el("td", {}, j.flow), el("td", {}, stateBadge(j.state)),
      el("td", {class: "num"}, `${j.attempts}/${j.max_attempts}`),
      el("td", {class: "num"}, `${duration(doc.now - j.finished_at)} ago`),
      j.state === "complete" ? el("td", {}, "")
        : el("td", {class: "error-cell", title: j.last_error || ""}, j.last_error || "")));
    fillTable(document.getElementById("recent"), recent, "no finished job yet");
  }

  function eventItem(e) {
    const detail = [];
    if (e.owner) detail.push(`by ${String(e.owner).split("@")[0]}`);
    if (e.reason) detail.push(e.reason);
    if (e.count !== undefined) detail.push(`${e.count} jobs`);
    if (e.source === "refresh") detail.push("↻");
    return el("li", {class: `event kind-${e.kind}`, dataset: {kind: e.kind, job: e.job || ""}},
      el("span", {class: "event-time mono"}, clock(e.at)),
      el("span", {class: `badge ev-${e.kind}`}, e.kind.replace("_", " ")),
      e.job ? jobLink(e.job, e.name) : el("span", {class: "muted"}, "board"),
      el("span", {class: "event-flow"}, e.flow || ""),
      el("span", {class: "muted small", title: e.source === "refresh"
        ? "seen by the periodic re-read of the board (no event reached this server)" : null},
        detail.join(" · ")));
  }

  function renderEvents(events) {
    const list = document.getElementById("events");
    list.replaceChildren(...(events.length ? events.slice(0, MAX_EVENTS).map(eventItem)
      : [el("li", {class: "empty muted"}, "no events since the dashboard started")]));
  }

  function render(doc) {
    lastDoc = doc;
    renderTiles(doc);
    renderFlows(doc);
    renderConductors(doc);
    renderClaims(doc);
    renderJobs(doc);
    renderEvents(doc.events || []);
    document.getElementById("footer").textContent =
      `updated ${clock(doc.now)} UTC · ${doc.totals.waiting + doc.totals.claimed} unfinished jobs`;
  }

  function onBoardEvent(event) {
    if (!lastDoc) return;
    lastDoc.events = [event, ...(lastDoc.events || [])].slice(0, MAX_EVENTS);
    const list = document.getElementById("events");
    const item = eventItem(event);
    item.classList.add("fresh");
    if (list.firstElementChild && list.firstElementChild.classList.contains("empty")) list.replaceChildren();
    list.prepend(item);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  async function start() {
    await Board.header();
    render(await Board.api("/api/overview"));
    Board.live("/api/stream", {overview: render, board: onBoardEvent});
  }

  start().catch((err) => {
    const banner = document.getElementById("banner");
    banner.textContent = `cannot load the dashboard: ${err.message}`;
    banner.hidden = false;
  });
})();
