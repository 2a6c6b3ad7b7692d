// One job: fields, claim, related jobs, timeline, tasks, masked store; admin actions.
"use strict";

(() => {
  const {el, duration, isoTime, clock, stateBadge, jobLink, fillTable, api} = Board;
  const jobId = decodeURIComponent(location.pathname.replace(/^\/jobs\//, ""));
  const MIN_RELOAD = 500;  // ms between two reads of the job
  let lastLoad = 0, pending = null, finished = false;

  function kv(target, pairs) {
    target.replaceChildren(...pairs.flatMap(([key, value]) =>
      [el("dt", {}, key), el("dd", {}, value === null || value === undefined || value === "" ? "–" : value)]));
  }

  function json(value) { return value === null || value === undefined ? "–" : JSON.stringify(value, null, 2); }

  function renderJob(doc) {
    const job = doc.job;
    finished = ["complete", "failed", "trashed", "cancelled"].includes(job.state);
    document.title = `${job.name} · Conductor`;
    document.getElementById("job-name").textContent = job.name;
    document.getElementById("crumb").textContent = job.name;
    document.getElementById("job-id").textContent = job.id;
    document.getElementById("job-state").replaceChildren(stateBadge(job.state));
    kv(document.getElementById("fields"), [
      ["flow", job.flow],
      ["state", (job.state === "claimed" ? "running (claimed)" : job.state) +
                (job.cancel_requested && !finished ? ", cancel requested" : "")],
      ["priority", job.priority.toLowerCase().replace("_", " ")],
      ["attempts", `${job.attempts} of ${job.max_attempts}`],
      ["posted", `${isoTime(job.created_at)} (${duration(doc.now - job.created_at)} ago)`],
      ["finished", job.finished_at ? `${isoTime(job.finished_at)} (${duration(job.finished_at - job.created_at)} after posting)` : null],
      ["token", job.token],
      job.state === "complete"  // an error from an earlier attempt, not why it ended
        ? ["earlier error", job.last_error ? el("span", {class: "muted"}, job.last_error) : null]
        : ["last error", job.last_error ? el("span", {class: "bad"}, job.last_error) : null],
    ]);
    const claim = doc.claim;
    kv(document.getElementById("claim"), claim ? [
      ["owner", el("span", {class: "mono"}, claim.owner)],
      ["since", `${clock(claim.claimed_at)} UTC (${duration(claim.age)})`],
      ["lease left", claim.lease_left === null ? "session-bound" : duration(claim.lease_left)],
      ["token", claim.token],
      ["flags", claim.flags.length ? claim.flags.join(", ") : "ok"],
    ] : [["claim", finished ? "none (finished)" : "none (waiting)"]]);
    const links = [];
    for (const [label, list] of [["parent", doc.parents], ["child", doc.children]]) {
      for (const link of list) {
        links.push(el("div", {class: "link-row", dataset: {relation: label}},
          el("span", {class: "muted rel"}, label), jobLink(link.id, link.name),
          link.state ? stateBadge(link.state) : el("span", {class: "muted"}, "not on the board")));
      }
    }
    document.getElementById("links").replaceChildren(
      ...(links.length ? links : [el("span", {class: "muted"}, "no parent or child jobs")]));
    Timeline.draw(document.getElementById("timeline"), document.getElementById("legend"), doc.timeline);
    const attemptOf = Object.fromEntries(doc.timeline.bars.map((b) => [b.task, b.attempt]));
    fillTable(document.getElementById("tasks"), doc.tasks.map((t) => el("tr", {dataset: {task: t.task}},
      el("td", {class: "strong"}, t.task), el("td", {}, t.state || "–"),
      el("td", {}, attemptOf[t.task] ? `#${attemptOf[t.task]}` : "–"),
      el("td", {class: "mono small"}, (t.conductor || "–").split("@")[0]),
      el("td", {class: "mono small"}, t.host || "–"),
      el("td", {class: "num"}, clock(t.start)),
      el("td", {class: "num"}, duration(t.durations.input_transform)),
      el("td", {class: "num"}, duration(t.durations.task)),
      el("td", {class: "num"}, duration(t.durations.result_transform)),
      el("td", {class: t.error ? "bad" : "mono small"}, t.error ? t.error : json(t.result)))),
      "no task has saved progress");
    document.getElementById("store").textContent = json(job.store);
    document.getElementById("result").textContent = json(job.result);
    document.getElementById("details").textContent = json(job.details);
    document.getElementById("footer").textContent = `updated ${clock(doc.now)} UTC`;
    for (const button of document.querySelectorAll("[data-action]")) {
      const action = button.dataset.action;
      button.disabled = action === "retry" ? !["failed", "trashed", "cancelled"].includes(job.state) : finished;
    }
  }

  async function load() {
    lastLoad = Date.now();
    try {
      renderJob(await api(`/api/jobs/${encodeURIComponent(jobId)}`));
    } catch (err) {
      const banner = document.getElementById("banner");
      banner.textContent = err.status === 404 ? `no job ${jobId} on this board (purged?)` : err.message;
      banner.hidden = false;
    }
  }

  /** Reload soon, at most once per MIN_RELOAD ms however many events arrive. */
  function reload() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; load(); }, Math.max(0, lastLoad + MIN_RELOAD - Date.now()));
  }

  async function act(action) {
    const out = document.getElementById("action-result");
    let body = {};
    if (action === "trash") {
      const reason = window.prompt("Trash this job: it will never run again. Reason:", "");
      if (reason === null) return;
      body = reason.trim() ? {reason: reason.trim()} : {};
    } else if (!window.confirm(`${action[0].toUpperCase() + action.slice(1)} job ${jobId}?`)) {
      return;
    }
    out.className = "action-result";
    out.textContent = `${action}…`;
    try {
      const answer = await api(`/api/jobs/${encodeURIComponent(jobId)}/${action}`,
        {method: "POST", body: JSON.stringify(body)});
      out.classList.add("ok");
      out.replaceChildren(answer.new ? el("span", {}, "retried as ", jobLink(answer.new.id, answer.new.name))
        : `${action} done: ${answer.job.state}${answer.requested ? " (its conductor will stop it)" : ""}`);
      reload();
    } catch (err) {
      out.classList.add("bad");
      out.textContent = err.message;
    }
  }

  async function start() {
    const config = await Board.header();
    if (config.admin) {
      document.getElementById("actions").hidden = false;
      for (const button of document.querySelectorAll("[data-action]")) {
        button.addEventListener("click", () => act(button.dataset.action));
      }
    }
    await load();
    Board.live(`/api/stream?job=${encodeURIComponent(jobId)}`, {
      board: reload,                              // an event about this job
      overview: () => { if (!finished) reload(); },  // the bounded refresh (leases, progress)
    });
  }

  start();
})();
