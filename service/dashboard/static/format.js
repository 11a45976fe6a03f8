// Formatting and small DOM helpers shared by the views. Nothing here touches the network or state.

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const exactFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  timeZoneName: "short",
});

const shortFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});

const UNITS = [
  ["year", 365 * 24 * 3600],
  ["month", 30 * 24 * 3600],
  ["week", 7 * 24 * 3600],
  ["day", 24 * 3600],
  ["hour", 3600],
  ["minute", 60],
];

/** A Date for an ISO time, or null when it is not one (a value from Codat may be anything). */
function dateOf(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "3 minutes ago" for an ISO time; "just now" under a minute. */
export function relativeTime(iso, now = Date.now()) {
  const date = dateOf(iso);
  if (!date) return String(iso ?? "");
  const seconds = (date.getTime() - now) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

export function exactTime(iso) {
  const date = dateOf(iso);
  return date ? exactFormat.format(date) : String(iso ?? "");
}

/**
 * Build an element: h("button", { class: "x", onclick: fn, dataset: {id: 1} }, "text", child).
 * Text is always set as text, never parsed as HTML: every value here may come from Codat.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A <time> showing relative time, the exact time on hover; kept fresh by `refreshTimes`. */
export function timeEl(iso, empty = "never") {
  if (!iso) return h("span", { class: "muted" }, empty);
  return h("time", { datetime: iso, title: exactTime(iso), dataset: { relative: "" } }, relativeTime(iso));
}

/** A <time> showing a short absolute time ("Nov 20, 10:10"), the exact time on hover: for tables of events. */
export function whenEl(iso, empty = "—") {
  if (!iso) return h("span", { class: "muted" }, empty);
  const date = dateOf(iso);
  return h("time", { datetime: iso, title: exactTime(iso) }, date ? shortFormat.format(date) : String(iso));
}

export function refreshTimes(root = document) {
  for (const el of root.querySelectorAll("time[data-relative]")) {
    el.textContent = relativeTime(el.getAttribute("datetime"));
  }
}

/** Keep keyboard focus on "the same" control across a re-render (matched by data-focus-key). */
export function keepingFocus(render) {
  const key = document.activeElement?.dataset?.focusKey;
  render();
  if (!key) return;
  const again = document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
  if (again && again !== document.activeElement) again.focus({ preventScroll: true });
}

/** The spinner's words for running syncs: Codat's status while Codat says one is still waiting there. */
export function syncingLabel(syncs) {
  const delayed = syncs.find((sync) => sync.delayed && sync.codat_status);
  return delayed ? `Syncing (waiting at Codat: ${delayed.codat_status})` : "Syncing…";
}

export function spinner(label, hint = null) {
  return h(
    "span",
    { class: "syncing" },
    h("span", { class: "spinner", "aria-hidden": "true" }),
    h("span", { class: "syncing-text" }, label),
    hint ? h("span", { class: "syncing-typical" }, hint) : null,
  );
}

/** The spinner of running syncs: what Codat is waiting at, if anything, and how long they usually take. */
export function runningSpinner(syncs) {
  return spinner(syncingLabel(syncs), typicalText(syncs));
}

const clockFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit" });
const dayClockFormat = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

/** "about 4 min", "under a minute", "about 2 h": a typical duration in seconds, in words. */
export function aboutDuration(seconds) {
  if (seconds < 60) return "under a minute";
  if (seconds < 90 * 60) return `about ${Math.round(seconds / 60)} min`;
  return `about ${Math.round(seconds / 3600)} h`;
}

/**
 * "usually about 4 min — expected by 10:42" for the active syncs given (the one expected last), or null when
 * none has a typical duration.
 */
export function typicalText(syncs, now = Date.now()) {
  const timed = syncs.filter((s) => s.typical_duration_seconds != null && dateOf(s.expected_completion_at));
  if (!timed.length) return null;
  const last = timed.reduce((a, b) => (Date.parse(a.expected_completion_at) >= Date.parse(b.expected_completion_at) ? a : b));
  const by = dateOf(last.expected_completion_at);
  const sameDay = new Date(now).toDateString() === by.toDateString();
  const when = sameDay ? clockFormat.format(by) : dayClockFormat.format(by);
  return `usually ${aboutDuration(last.typical_duration_seconds)} — expected by ${when}`;
}

export function connectionStatus(connection) {
  return connection.deleted_at ? "deleted" : connection.status || "Unknown";
}

export function statusBadge(status) {
  return h("span", { class: "badge", dataset: { status } }, status);
}

const PHASE_LABELS = {
  active: "In progress",
  succeeded: "Succeeded",
  unsupported: "Not supported",
  failed: "Failed",
  stale: "No result",
};

export function phaseBadge(phase, status) {
  const label = PHASE_LABELS[phase] ?? phase;
  return h(
    "span",
    { class: "badge", dataset: { phase }, title: status ? `Codat status: ${status}` : null },
    status && status !== label && phase !== "succeeded" ? `${label}: ${status}` : label,
  );
}

/** A connection's platform as shown: its name, else its key, else "Unknown platform" (blank counts as missing). */
export function platformName(connection) {
  for (const value of [connection?.platform_name, connection?.platform_key]) {
    const text = typeof value === "string" ? value.trim() : "";
    if (text) return text;
  }
  return "Unknown platform";
}

/** The platform's initial on a colour picked from its name (all colours pass 4.5:1 with white text). */
export function platformLogo(name) {
  const text = String(name ?? "").trim() || "?";
  let hash = 0;
  for (const ch of text) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  const initial = [...text][0].toUpperCase();
  return h("span", { class: "logo", dataset: { hue: String(hash % 8) }, "aria-hidden": "true" }, initial);
}

/** "bankAccounts" -> "Bank accounts", "banking-transactions" -> "Banking transactions". */
export function humanise(key) {
  const words = String(key)
    .replace(/[-_]+/g, " ")
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .toLowerCase()
    .trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function dataTypeLabel(dataType) {
  return dataType === "*" ? "All data" : dataType;
}

/** Only http(s) links are followed: a link URL comes from outside and must not run script. */
export function safeUrl(raw) {
  if (!raw) return null;
  try {
    const url = new URL(raw);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}
