// The detail of one connection: status and metadata, data types, sync history (paged, newest
// first), and its actions. Re-read from the JSON API whenever the stream says it changed.

import {
  connectionStatus,
  dataTypeLabel,
  exactTime,
  h,
  humanise,
  keepingFocus,
  phaseBadge,
  platformLogo,
  platformName,
  runningSpinner,
  spinner,
  statusBadge,
  syncingLabel,
  timeEl,
  whenEl,
} from "./format.js";
import { freshnessBadge, historyStrip } from "./freshness.js";

const HISTORY_PAGE = 20;
const TIMELINE_PAGE = 20;
const STRIP_PAGE = 500;
const STRIP_DAYS_MS = 30 * 24 * 3600 * 1000;
const RELOAD_DELAY_MS = 150;
const enc = encodeURIComponent;

export class DetailView {
  /**
   * `onClose()`: the person asked to go back to the list. `can(right)`: whether the page's token has the
   * right (the API decides in the end); what it may not do is left out.
   */
  constructor({ el, api, store, messages, actions, can, companyId, backHref, onClose }) {
    Object.assign(this, { el, api, store, messages, actions, can, companyId, backHref, onClose });
    this.connectionId = null;
    this.detail = null;
    this.syncs = [];
    this.month = [];
    this.nextCursor = null;
    this.timeline = [];
    this.timelineCursor = null;
    this.loads = 0;
    this.reloadTimer = null;
  }

  async open(connectionId, { focus = false } = {}) {
    if (connectionId !== this.connectionId) {
      this.connectionId = connectionId;
      this.detail = null;
      this.syncs = [];
      this.month = [];
      this.nextCursor = null;
      this.timeline = [];
      this.timelineCursor = null;
      this.el.hidden = false;
      this.el.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    }
    await this.reload();
    if (focus && this.connectionId === connectionId) {
      const heading = this.el.querySelector("#detail-heading");
      heading?.focus({ preventScroll: true });
      heading?.scrollIntoView({ block: "nearest" });
    }
  }

  close() {
    this.connectionId = null;
    this.detail = null;
    clearTimeout(this.reloadTimer);
    this.el.hidden = true;
    this.el.replaceChildren();
  }

  async reload() {
    const id = this.connectionId;
    if (!id) return;
    const load = ++this.loads;
    try {
      const [detail, page, month, story] = await Promise.all([
        this.api.get(`/v1/connections/${enc(id)}`),
        this.api.get(`/v1/connections/${enc(id)}/syncs`, { limit: Math.max(HISTORY_PAGE, this.syncs.length) }),
        this.lastMonth(id),
        this.api.get(`/v1/connections/${enc(id)}/timeline`, { limit: Math.max(TIMELINE_PAGE, this.timeline.length) }),
      ]);
      if (load !== this.loads || id !== this.connectionId) return;
      this.detail = detail;
      this.month = month;
      this.syncs = page.items;
      this.nextCursor = page.next_cursor;
      this.timeline = story.items;
      this.timelineCursor = story.next_cursor;
      this.render();
    } catch (error) {
      if (load !== this.loads || id !== this.connectionId) return;
      if (error.status === 404) {
        this.el.replaceChildren(h("p", { class: "empty" }, "This connection does not exist (any more)."));
      } else {
        this.messages.error(error, "Loading the connection");
      }
    }
  }

  /** The syncs of the last 30 days (newest first), for the strip: pages until one reaches further back. */
  async lastMonth(id) {
    const since = Date.now() - STRIP_DAYS_MS;
    const syncs = [];
    let cursor = null;
    for (let pages = 0; pages < 20; pages += 1) {
      const page = await this.api.get(`/v1/connections/${enc(id)}/syncs`, { limit: STRIP_PAGE, cursor });
      syncs.push(...page.items);
      const oldest = page.items.at(-1);
      const at = oldest && Date.parse(oldest.completed_at ?? oldest.requested_at ?? "");
      if (!page.next_cursor || (at && at < since)) break;
      cursor = page.next_cursor;
    }
    return syncs;
  }

  /** The store changed (`connectionId` null: possibly everything). */
  onChange(connectionId) {
    if (!this.connectionId || (connectionId !== null && connectionId !== this.connectionId)) return;
    const fresh = this.store.connections.get(this.connectionId);
    if (this.detail && fresh) this.detail = { ...this.detail, ...fresh };
    this.render();
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.reload(), RELOAD_DELAY_MS);
  }

  async loadOlder(button) {
    button.disabled = true;
    button.textContent = "Loading…";
    const id = this.connectionId;
    try {
      const page = await this.api.get(`/v1/connections/${enc(id)}/syncs`, {
        limit: HISTORY_PAGE,
        cursor: this.nextCursor,
      });
      if (id !== this.connectionId) return;
      this.syncs = [...this.syncs, ...page.items];
      this.nextCursor = page.next_cursor;
    } catch (error) {
      this.messages.error(error, "Loading older syncs");
    }
    this.render();
  }

  async loadOlderTimeline(button) {
    button.disabled = true;
    button.textContent = "Loading…";
    const id = this.connectionId;
    try {
      const page = await this.api.get(`/v1/connections/${enc(id)}/timeline`, {
        limit: TIMELINE_PAGE,
        cursor: this.timelineCursor,
      });
      if (id !== this.connectionId) return;
      this.timeline = [...this.timeline, ...page.items];
      this.timelineCursor = page.next_cursor;
    } catch (error) {
      this.messages.error(error, "Loading older timeline events");
    }
    this.render();
  }

  render() {
    const d = this.detail;
    if (!d || !this.connectionId) return;
    const name = platformName(d);
    const deleted = Boolean(d.deleted_at);
    const syncing = !deleted && this.store.isSyncing(d.id);
    keepingFocus(() =>
      this.el.replaceChildren(
        h(
          "div",
          { class: "panel-head detail-head" },
          h("a", { class: "back", href: this.backHref(), onclick: (e) => this.back(e) }, "← All connections"),
          h("h2", { id: "detail-heading", tabindex: "-1" }, platformLogo(name), h("span", {}, name)),
          h(
            "div",
            { class: "detail-status" },
            statusBadge(connectionStatus(d)),
            freshnessBadge(d),
            syncing ? runningSpinner(this.store.syncsRunning(d.id)) : null,
          ),
        ),
        ...this.notices(d, name),
        deleted ? null : this.actionBar(d, name),
        h("h3", {}, "Details"),
        this.facts(d),
        h("h3", { id: "data-types-heading" }, "Data types"),
        this.dataTypes(d, name, deleted),
        h("h3", { id: "strip-heading" }, "Last 30 days"),
        historyStrip(
          d.data_types.map((t) => t.data_type),
          this.month,
        ),
        h("h3", { id: "timeline-heading" }, "Timeline"),
        this.storyList(),
        h("h3", { id: "history-heading" }, "Sync history"),
        this.history(),
        ...resolvedProblems(d),
      ),
    );
  }

  back(event) {
    if (event.button !== 0 || event.metaKey || event.ctrlKey) return;
    event.preventDefault();
    this.onClose();
  }

  notices(d, name) {
    // Codat's link for re-linking is asked for at the click (see actions.reconnect), never the stored one.
    const relink = (label, focusKey, options = {}) => {
      if (!this.can("reconnect")) return null;
      const pending = this.actions.isPending(`reconnect:${d.id}`);
      return h(
        "button",
        {
          type: "button",
          class: "button primary",
          disabled: pending,
          dataset: { focusKey },
          onclick: () => this.actions.reconnect(d, name, options),
        },
        pending ? "Asking Codat for a link…" : label,
      );
    };
    const authError = d.last_sync_status === "AuthError" || d.data_types.some((t) => t.status === "AuthError");
    const out = [];
    if (d.deleted_at) {
      out.push(notice("info", `This connection was deleted on ${exactTime(d.deleted_at)}; its history was removed.`));
    } else if (authError) {
      out.push(
        notice(
          "warning",
          `Codat can no longer read from ${name}: the customer must sign in to ${name} again to re-authorise it.`,
          relink(`Re-link ${name}`, "relink"),
        ),
      );
    } else if (d.status === "Unlinked" || d.status === "Deauthorized") {
      const why = d.status === "Deauthorized" ? `Access to ${name} was withdrawn.` : "This connection is disconnected.";
      const reconnect = relink("Reconnect", "reconnect", { confirm: true });
      out.push(notice("info", `${why} Data already synced is kept.`, reconnect));
    } else if (d.status === "PendingAuth") {
      out.push(
        notice("info", "The customer has not finished linking this connection yet.", relink("Continue linking", "relink")),
      );
    }
    const current = d.active_errors ?? [];
    if (!d.deleted_at && current.length) {
      out.push(
        notice(
          "warning",
          "Codat reports a problem with this connection:",
          h("ul", { class: "current-problems" }, current.map((e) => h("li", {}, errorText(e)))),
        ),
      );
    }
    return out;
  }

  actionBar(d, name) {
    const gone = d.status === "Unlinked" || d.status === "Deauthorized";
    return h(
      "div",
      { class: "toolbar detail-actions" },
      h(
        "button",
        {
          type: "button",
          class: "button",
          disabled: gone || this.actions.isPending(`disconnect:${d.id}`),
          title: gone ? "Already disconnected" : null,
          dataset: { focusKey: "disconnect" },
          onclick: () => this.actions.disconnect(d, name),
        },
        this.actions.isPending(`disconnect:${d.id}`) ? "Disconnecting…" : "Disconnect",
      ),
      h(
        "button",
        {
          type: "button",
          class: "button danger",
          disabled: this.actions.isPending(`delete:${d.id}`),
          dataset: { focusKey: "delete" },
          onclick: () => this.actions.remove(d, name),
        },
        this.actions.isPending(`delete:${d.id}`) ? "Deleting…" : "Delete",
      ),
    );
  }

  facts(d) {
    const rows = [
      ["Company", d.company_name || d.company_id],
      ["Source type", d.source_type],
      ["Linked", d.linked_at && timeEl(d.linked_at)],
      ["Created", d.created_at && timeEl(d.created_at)],
      ["First sync", timeEl(d.first_sync_at)],
      ["First read completed", d.initial_read_completed_at && timeEl(d.initial_read_completed_at)],
      ["Most recent sync", [timeEl(d.last_sync_at), d.last_sync_status ? ` (${d.last_sync_status})` : ""]],
      ["Last successful sync", timeEl(d.last_successful_sync_at)],
      ["Disconnected", d.disconnected_at && timeEl(d.disconnected_at)],
      ["Last link attempt failed", d.last_link_failure && linkFailure(d.last_link_failure)],
      ...Object.entries(d.metadata ?? {}).map(([key, value]) => [humanise(key), plain(value)]),
      ["Connection ID", h("code", {}, d.id)],
    ];
    return h(
      "dl",
      { class: "facts detail-facts" },
      rows
        .filter(([, value]) => value !== null && value !== undefined && value !== "")
        .map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", {}, value))),
    );
  }

  dataTypes(d, name, deleted) {
    const known = new Set(d.data_types.map((t) => t.data_type));
    const running = this.store
      .activeSyncs(d.id)
      .filter((s) => s.data_type !== "*" && !known.has(s.data_type))
      .map((s) => ({ data_type: s.data_type, status: s.status, phase: "active", last_successful_sync_at: null }));
    const types = [...d.data_types, ...running];
    if (!types.length) return h("p", { class: "muted" }, deleted ? "None." : "No data has been synced yet.");
    const linked = d.status === "Linked" && !deleted;
    return h(
      "table",
      { class: "table data-types", "aria-labelledby": "data-types-heading" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Data type"),
          h("th", { scope: "col" }, "Last status"),
          h("th", { scope: "col" }, "Last successful sync"),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
        ),
      ),
      h(
        "tbody",
        {},
        types.map((t) => {
          const syncing = !deleted && this.store.isSyncing(d.id, t.data_type);
          const key = `refresh:${d.company_id}:${t.data_type}`;
          return h(
            "tr",
            { dataset: { dataType: t.data_type, phase: syncing ? "active" : t.phase } },
            h("th", { scope: "row", "data-label": "Data type" }, t.data_type),
            h(
              "td",
              { "data-label": "Last status" },
              syncing
                ? runningSpinner(this.store.syncsRunning(d.id, t.data_type))
                : phaseBadge(t.phase, t.status),
            ),
            h("td", { "data-label": "Last successful sync" }, timeEl(t.last_successful_sync_at)),
            h(
              "td",
              { class: "cell-action" },
              deleted
                ? null
                : h(
                    "button",
                    {
                      type: "button",
                      class: "button small",
                      "aria-label": `Refresh ${t.data_type}`,
                      disabled: !linked || syncing || this.actions.isPending(key),
                      title: linked ? null : `${name} is not linked`,
                      dataset: { focusKey: `refresh-type:${t.data_type}` },
                      onclick: () => this.actions.refreshType(d.company_id, t.data_type),
                    },
                    this.actions.isPending(key) ? "Requesting…" : "Refresh",
                  ),
            ),
          );
        }),
      ),
    );
  }

  /** What happened to the connection, newest first, 20 at a time. */
  storyList() {
    if (!this.timeline.length) return h("p", { class: "muted" }, "Nothing has happened yet.");
    return h(
      "div",
      { class: "timeline-wrap" },
      h(
        "ol",
        { class: "timeline", "aria-labelledby": "timeline-heading" },
        this.timeline.map((item) =>
          h(
            "li",
            { dataset: { kind: item.kind } },
            whenEl(item.at),
            " ",
            h("span", { class: "timeline-summary" }, item.summary),
          ),
        ),
      ),
      this.timelineCursor
        ? h(
            "button",
            {
              type: "button",
              class: "button",
              dataset: { focusKey: "older-timeline" },
              onclick: (e) => this.loadOlderTimeline(e.currentTarget),
            },
            "Show older events",
          )
        : null,
    );
  }

  history() {
    if (!this.syncs.length) return h("p", { class: "muted" }, "No syncs recorded.");
    return h(
      "div",
      { class: "history-wrap" },
      h(
        "table",
        { class: "table history", "aria-labelledby": "history-heading" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Data type", "Result", "Requested", "Finished", "Issues"].map((label) => h("th", { scope: "col" }, label)),
          ),
        ),
        h("tbody", {}, this.syncs.map(historyRow)),
      ),
      this.nextCursor
        ? h(
            "button",
            {
              type: "button",
              class: "button",
              dataset: { focusKey: "older" },
              onclick: (e) => this.loadOlder(e.currentTarget),
            },
            "Show older syncs",
          )
        : null,
    );
  }
}

function historyRow(sync) {
  const failed = sync.phase === "failed";
  return h(
    "tr",
    { class: failed ? "failed" : null, dataset: { syncId: sync.id, phase: sync.phase } },
    h("th", { scope: "row", "data-label": "Data type" }, dataTypeLabel(sync.data_type)),
    h(
      "td",
      { "data-label": "Result" },
      sync.phase === "active"
        ? spinner(sync.delayed ? syncingLabel([sync]) : sync.status)
        : phaseBadge(sync.phase, sync.status),
    ),
    h("td", { "data-label": "Requested" }, whenEl(sync.requested_at)),
    h("td", { "data-label": "Finished" }, whenEl(sync.completed_at)),
    h(
      "td",
      { "data-label": "Issues" },
      sync.issues?.length ? h("ul", { class: "issues" }, sync.issues.map((i) => h("li", {}, issueText(i)))) : "—",
    ),
  );
}

/** Errors Codat has resolved: not today's problem, so they are listed with the history. */
function resolvedProblems(d) {
  if (d.deleted_at) return [];
  const current = new Set((d.active_errors ?? []).map((e) => JSON.stringify(e)));
  const resolved = (d.errors ?? []).filter((e) => !current.has(JSON.stringify(e)));
  if (!resolved.length) return [];
  return [
    h("h3", { id: "resolved-heading" }, "Resolved problems"),
    h(
      "ul",
      { class: "resolved-problems", "aria-labelledby": "resolved-heading" },
      resolved.map((e) =>
        h("li", {}, errorText(e), e.resolvedOnUtc ? [" (resolved ", whenEl(e.resolvedOnUtc), ")"] : null),
      ),
    ),
  ];
}

function errorText(error) {
  if (typeof error !== "object" || error === null) return String(error);
  return error.errorMessage ?? error.statusText ?? JSON.stringify(error);
}

function linkFailure(failure) {
  const why = [failure.status_code, failure.message ?? failure.status_text].filter(Boolean).join(": ");
  return [timeEl(failure.at), why ? ` (${why})` : ""];
}

function issueText(issue) {
  if (typeof issue !== "object" || issue === null) return String(issue);
  const message = issue.message ?? issue.description ?? issue.errorMessage ?? JSON.stringify(issue);
  return issue.type && issue.type !== message ? `${issue.type}: ${message}` : message;
}

function notice(kind, text, ...extra) {
  return h("div", { class: "notice", dataset: { kind } }, h("p", {}, text), ...extra);
}

function plain(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "object") {
    const text = JSON.stringify(value);
    return text.length > 200 ? `${text.slice(0, 199)}…` : text;
  }
  return String(value);
}
