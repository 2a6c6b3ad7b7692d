// The job page's Gantt chart: one row per task, bars coloured by conductor, labelled by attempt.
"use strict";

const Timeline = (() => {
  const {el, duration, isoTime} = Board;
  const PALETTE = ["#2f6fdb", "#1a9d6b", "#d68a00", "#7c4dce", "#0e8fa8", "#c2417f", "#5f8a1c"];
  const STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60,
                 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const LABEL = 170, RIGHT = 90, ROW = 30, BAR = 16, AXIS = 34;

  function step(span, width) {
    const wanted = span / Math.max(2, Math.floor(width / 110));
    return STEPS.find((s) => s >= wanted) || STEPS[STEPS.length - 1];
  }

  function offset(seconds) {
    if (seconds === 0) return "0";
    return `+${duration(seconds)}`;
  }

  /** A bar's label: after the bar, or inside its end when the chart has no room on the right. */
  function barLabel(x0, w, y, text, width) {
    const room = width - (x0 + w);
    const inside = room < text.length * 6.5 + 10 && w > text.length * 6.5 + 12;
    return el("text", {class: `bar-label${inside ? " bar-label-inside" : ""}`, y: y + BAR / 2 + 4,
                       x: inside ? x0 + w - 6 : x0 + w + 6, "text-anchor": inside ? "end" : "start"}, text);
  }

  /** Draw ``data`` (the job document's ``timeline``) into ``box`` and its legend into ``legend``. */
  function draw(box, legend, data) {
    const bars = data.bars;
    const open = data.running;
    if (!bars.length && !open) {
      box.replaceChildren(el("p", {class: "muted"}, "No task has saved progress yet."));
      legend.replaceChildren();
      return;
    }
    const width = Math.max(640, box.clientWidth || 900);
    const plot = width - LABEL - RIGHT;
    const start = data.start;
    const span = Math.max(data.end - start, 0.001);
    const x = (t) => LABEL + ((t - start) / span) * plot;
    const rows = bars.length + (open ? 1 : 0);
    const height = AXIS + rows * ROW + 12;
    const svg = el("svg", {class: "gantt", width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", "aria-label": "timeline of the job's tasks"});
    const who = (bar) => bar.conductor || bar.owner || bar.host || "unknown";
    const colour = (bar) => PALETTE[Math.max(0, data.conductors.indexOf(who(bar))) % PALETTE.length];

    // Grid and axis: offsets from the first moment shown.
    const tick = step(span, plot);
    for (let t = 0; t <= span + 1e-9; t += tick) {
      const px = x(start + t);
      svg.append(el("line", {class: "grid-line", x1: px, x2: px, y1: AXIS - 6, y2: height - 6}));
      svg.append(el("text", {class: "axis-label", x: px, y: AXIS - 12, "text-anchor": "middle"}, offset(t)));
    }
    // Rows: alternate shading, task name on the left.
    bars.forEach((bar, i) => {
      const y = AXIS + i * ROW;
      if (i % 2 === 0) svg.append(el("rect", {class: "row-band", x: 0, y, width, height: ROW}));
      svg.append(el("text", {class: "row-label", x: 10, y: y + ROW / 2 + 4}, bar.task));
    });
    if (open) {
      const y = AXIS + bars.length * ROW;
      if (bars.length % 2 === 0) svg.append(el("rect", {class: "row-band", x: 0, y, width, height: ROW}));
      svg.append(el("text", {class: "row-label row-running", x: 10, y: y + ROW / 2 + 4}, "running now"));
    }
    // Moments of the job: posted, claimed, finished.
    for (const marker of data.markers) {
      if (marker.at < start || marker.at > start + span) continue;
      const px = x(marker.at);
      svg.append(el("line", {class: `marker marker-${marker.kind}`, x1: px, x2: px, y1: AXIS - 4, y2: height - 6},
        el("title", {}, `${marker.kind} at ${isoTime(marker.at)}`)));
    }
    // Bars: the whole execution, the task's own phase darker inside it.
    bars.forEach((bar, i) => {
      const y = AXIS + i * ROW + (ROW - BAR) / 2;
      const end = bar.end || data.end;
      const x0 = x(bar.start), w = Math.max(2, x(end) - x0);
      const failed = bar.error || bar.success === false || String(bar.state).includes("FAIL");
      const group = el("g", {class: `bar${failed ? " bar-failed" : ""}${bar.end ? "" : " bar-open"}`,
                             "data-task": bar.task, "data-attempt": bar.attempt || "",
                             "data-conductor": who(bar)});
      const tip = [`${bar.task}: ${bar.state || "?"}`, `conductor ${who(bar)}`,
        bar.attempt ? `attempt ${bar.attempt} (claim token ${bar.token})` : null,
        bar.try > 1 ? `retry ${bar.try} within the run` : null, bar.host ? `host ${bar.host}` : null,
        `${isoTime(bar.start)} for ${bar.end ? duration(bar.end - bar.start) : "(running)"}`,
        bar.error ? `error: ${bar.error}` : null].filter(Boolean).join("\n");
      group.append(el("title", {}, tip));
      const rect = el("rect", {class: "bar-span", x: x0, y, width: w, height: BAR, rx: 3, fill: colour(bar)});
      group.append(rect);
      for (const phase of bar.phases) {
        if (phase.name !== "task") continue;
        const px = x(phase.start);
        group.append(el("rect", {class: "bar-phase", x: px, y: y + 3, width: Math.max(1, x(phase.end) - px),
                                 height: BAR - 6, rx: 2}));
      }
      const label = `${bar.attempt ? `#${bar.attempt} · ` : ""}${bar.end ? duration(bar.end - bar.start) : "running"}`;
      svg.append(group);
      svg.append(barLabel(x0, w, y, label, width));
    });
    if (open) {
      const y = AXIS + bars.length * ROW + (ROW - BAR) / 2;
      const x0 = x(open.start), w = Math.max(2, x(open.end) - x0);
      const group = el("g", {class: "bar bar-open bar-running", "data-task": "", "data-attempt": open.attempt,
                             "data-conductor": open.conductor || ""},
        el("title", {}, `the next task, running on ${open.owner} since ${isoTime(open.start)} ` +
                        `(attempt ${open.attempt}, claim token ${open.token})`),
        el("rect", {class: "bar-span", x: x0, y, width: w, height: BAR, rx: 3,
                    fill: PALETTE[Math.max(0, data.conductors.indexOf(open.conductor)) % PALETTE.length]}));
      svg.append(group);
      svg.append(barLabel(x0, w, y, `#${open.attempt} · ${duration(open.end - open.start)} so far`, width));
    }
    box.replaceChildren(svg);

    const items = data.conductors.map((name, i) => el("span", {class: "legend-item"},
      el("span", {class: "swatch", "data-colour": i}), name));
    items.forEach((item, i) => { item.firstChild.style.background = PALETTE[i % PALETTE.length]; });
    const attempts = data.attempts.map((a) => `#${a.attempt} = claim token ${a.token}`).join(", ");
    legend.replaceChildren(...items,
      attempts ? el("span", {class: "legend-item muted"}, `attempts: ${attempts}`) : null,
      el("span", {class: "legend-item muted"}, `from ${isoTime(start)}`));
  }

  return {draw};
})();
