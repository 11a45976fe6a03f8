// Freshness at a glance: badges in words and colour (never colour alone), the company's summary line,
// and the 30-day sync-history strip (inline SVG, no library) with a text alternative and a tooltip per cell.

import { h, humanise } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const DAY_MS = 24 * 3600 * 1000;
export const STRIP_DAYS = 30;

const WORDS = {
  fresh: "Up to date",
  pending: "Awaiting first sync",
  never: "Never synced",
  paused: "Paused",
};

/** "2 days", "1 hour", "5 minutes": how long ago a deadline passed. */
export function lateness(iso, now = Date.now()) {
  const late = Math.max(0, now - new Date(iso).getTime());
  const plural = (n, unit) => `${n} ${unit}${n === 1 ? "" : "s"}`;
  if (late >= DAY_MS) return plural(Math.floor(late / DAY_MS), "day");
  if (late >= 3600_000) return plural(Math.floor(late / 3600_000), "hour");
  return plural(Math.max(1, Math.floor(late / 60_000)), "minute");
}

/** "Invoices", "Invoices and bills", "Invoices and 2 other data types". */
function typeList(types) {
  const [first, ...rest] = types.map((t, i) => (i === 0 ? humanise(t) : humanise(t).toLowerCase()));
  if (!rest.length) return first;
  if (rest.length === 1) return `${first} and ${rest[0]}`;
  return `${first} and ${rest.length} other data types`;
}

/** What a connection's freshness badge says. */
export function freshnessText(connection, now = Date.now()) {
  const state = connection.freshness;
  if (state === "overdue") {
    const types = connection.overdue_data_types?.length ? connection.overdue_data_types : ["data"];
    const late = connection.expected_by ? ` ${lateness(connection.expected_by, now)}` : "";
    return `${typeList(types)}${late} late`;
  }
  return WORDS[state] ?? "Freshness unknown";
}

/** The badge; `title` adds the deadline on hover. */
export function freshnessBadge(connection, now = Date.now()) {
  const state = WORDS[connection.freshness] || connection.freshness === "overdue" ? connection.freshness : "unknown";
  const due = connection.expected_by ? new Date(connection.expected_by) : null;
  const title =
    state === "overdue" && due
      ? `Expected by ${due.toUTCString()}`
      : state === "fresh" || state === "pending"
        ? due && `Next sync expected by ${due.toUTCString()}`
        : null;
  return h("span", { class: "badge freshness", dataset: { freshness: state }, title }, freshnessText(connection, now));
}

/** "4 of 5 connections up to date" (deleted connections aside). */
export function summaryText(connections) {
  const live = connections.filter((c) => !c.deleted_at);
  const fresh = live.filter((c) => c.freshness === "fresh").length;
  return `${fresh} of ${live.length} connection${live.length === 1 ? "" : "s"} up to date`;
}

// --- the sync-history strip --------------------------------------------------------------------------

const OUTCOMES = {
  succeeded: "succeeded",
  failed: "failed",
  none: "no sync",
  active: "in progress",
};

/** Midnight UTC of the day `ms` falls in. */
function dayStart(ms) {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

function dayKey(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

const dayLabel = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" });

/**
 * Per data type and UTC day of the last `STRIP_DAYS` days: the day's counts and its outcome — `active`
 * (a sync running), else `succeeded` (any success), else `failed` (only failures), else `none`.
 */
export function stripCells(dataTypes, syncs, now = Date.now()) {
  const today = dayStart(now);
  const first = today - (STRIP_DAYS - 1) * DAY_MS;
  const names = [...new Set([...dataTypes, ...syncs.map((s) => s.data_type)])].filter((t) => t && t !== "*").sort();
  const rows = new Map(names.map((name) => [name, new Map()]));
  for (const sync of syncs) {
    const row = rows.get(sync.data_type);
    const at = Date.parse(sync.completed_at ?? sync.requested_at ?? "");
    if (!row || Number.isNaN(at) || at < first) continue;
    const key = dayKey(dayStart(at));
    const counts = row.get(key) ?? { succeeded: 0, failed: 0, active: 0 };
    if (sync.phase === "succeeded") counts.succeeded += 1;
    else if (sync.phase === "active") counts.active += 1;
    else if (sync.phase === "failed" || sync.phase === "stale") counts.failed += 1;
    row.set(key, counts);
  }
  return names.map((name) => ({
    dataType: name,
    days: Array.from({ length: STRIP_DAYS }, (_, i) => {
      const start = first + i * DAY_MS;
      const counts = rows.get(name).get(dayKey(start)) ?? { succeeded: 0, failed: 0, active: 0 };
      const outcome = counts.active ? "active" : counts.succeeded ? "succeeded" : counts.failed ? "failed" : "none";
      return { day: dayKey(start), label: dayLabel.format(new Date(start)), outcome, ...counts };
    }),
  }));
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== null && value !== undefined) el.setAttribute(key, value);
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function cellText(dataType, day) {
  const parts = [];
  if (day.succeeded) parts.push(`${day.succeeded} succeeded`);
  if (day.failed) parts.push(`${day.failed} failed`);
  if (day.active) parts.push(`${day.active} in progress`);
  return `${humanise(dataType)}, ${day.label}: ${parts.length ? parts.join(", ") : "no sync"}`;
}

/** "Invoices: 25 days succeeded, 2 failed, 3 without a sync." */
export function rowSummary(row) {
  const count = (outcome) => row.days.filter((d) => d.outcome === outcome).length;
  const parts = [`${count("succeeded")} days succeeded`, `${count("failed")} failed`];
  if (count("active")) parts.push(`${count("active")} in progress`);
  parts.push(`${count("none")} without a sync`);
  return `${humanise(row.dataType)}: ${parts.join(", ")}.`;
}

/** The strip: one row per data type, one cell per day (oldest left), as inline SVG with a text alternative. */
export function historyStrip(dataTypes, syncs, now = Date.now()) {
  const rows = stripCells(dataTypes, syncs, now);
  if (!rows.length) return h("p", { class: "muted" }, "No syncs in the last 30 days.");
  const cell = 14;
  const gap = 3;
  const labelWidth = 170;
  const width = labelWidth + STRIP_DAYS * (cell + gap);
  const height = rows.length * (cell + gap) + 18;
  const summary = rows.map(rowSummary).join(" ");
  const chart = svg(
    "svg",
    {
      class: "history-strip",
      role: "img",
      viewBox: `0 0 ${width} ${height}`,
      "aria-labelledby": "strip-title",
      "aria-describedby": "strip-desc",
    },
    svg("title", { id: "strip-title" }, "Sync history of the last 30 days, one row per data type"),
    svg("desc", { id: "strip-desc" }, summary),
  );
  chart.style.maxWidth = `${width}px`; // through CSSOM: the page's CSP allows no style attributes
  rows.forEach((row, r) => {
    const y = r * (cell + gap);
    chart.append(svg("text", { x: "0", y: String(y + cell - 3), class: "strip-label" }, humanise(row.dataType)));
    row.days.forEach((day, i) => {
      const rect = svg(
        "rect",
        {
          x: String(labelWidth + i * (cell + gap)),
          y: String(y),
          width: String(cell),
          height: String(cell),
          rx: "2",
          class: `strip-cell outcome-${day.outcome}`,
          "data-data-type": row.dataType,
          "data-day": day.day,
          "data-outcome": day.outcome,
        },
        svg("title", {}, cellText(row.dataType, day)),
      );
      chart.append(rect);
    });
  });
  const axisY = String(rows.length * (cell + gap) + 12);
  chart.append(
    svg("text", { x: String(labelWidth), y: axisY, class: "strip-axis" }, rows[0].days[0].label),
    svg("text", { x: String(width), y: axisY, class: "strip-axis", "text-anchor": "end" }, "Today"),
  );
  const legend = h(
    "ul",
    { class: "strip-legend", "aria-hidden": "true" },
    Object.entries(OUTCOMES).map(([outcome, words]) =>
      h("li", {}, h("span", { class: `swatch outcome-${outcome}` }), words),
    ),
  );
  return h(
    "figure",
    { class: "strip" },
    chart,
    legend,
  );
}
