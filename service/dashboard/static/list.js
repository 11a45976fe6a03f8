// The connection list: one card per connection, rebuilt from the store on every change (the lists
// are small; focus is kept by data-focus-key).

import {
  connectionStatus,
  h,
  keepingFocus,
  platformLogo,
  platformName,
  runningSpinner,
  statusBadge,
  timeEl,
} from "./format.js";
import { freshnessBadge } from "./freshness.js";
import { healthHead } from "./health.js";

/**
 * listEl: the <ul>; emptyEl: the paragraph shown when nothing is listed.
 * linkFor(connectionId): the href of a connection's detail; onSelect(connectionId): open it.
 * actions: the page's action helpers (actions.js), for each card's next-action button.
 */
export function renderList(
  listEl,
  emptyEl,
  store,
  { includeDeleted, selectedId, linkFor, onSelect, emptyText, actions },
) {
  const connections = store.sorted({ includeDeleted });
  const open = { linkFor, onSelect, actions };
  keepingFocus(() => {
    listEl.replaceChildren(
      ...connections.map((c, index) => safeCard(c, store, c.id === selectedId, open, `card-${index}`)),
    );
  });
  emptyEl.hidden = connections.length > 0;
  emptyEl.textContent = emptyText(store.connections.size > 0);
}

/** A card, or a plain one naming the connection when its values cannot be shown: one odd value never blanks the list. */
function safeCard(connection, store, selected, open, key) {
  try {
    return card(connection, store, selected, open, key);
  } catch (error) {
    console.error("connection card", connection?.id, error);
    return h(
      "li",
      { class: "connection", dataset: { connectionId: String(connection?.id ?? ""), status: "Unknown" } },
      h("div", { class: "connection-head" }, h("a", { href: open.linkFor(connection?.id) }, String(connection?.id ?? "?"))),
    );
  }
}

/** One card, led by its health; `key` prefixes the ids that let the link announce health, status and times. */
function card(connection, store, selected, { linkFor, onSelect, actions }, key) {
  const status = connectionStatus(connection);
  const name = platformName(connection);
  const syncing = !connection.deleted_at && store.isSyncing(connection.id);
  const lastFailed = connection.last_sync_status && !["Complete", "NotSupported"].includes(connection.last_sync_status);
  const open = (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    onSelect(connection.id);
  };
  return h(
    "li",
    {
      class: "connection",
      dataset: { connectionId: connection.id, status, syncing: syncing ? "true" : "false" },
    },
    healthHead(connection, name, actions, store, `${key}-health`),
    h(
      "div",
      { class: "connection-head" },
      platformLogo(name),
      h(
        "div",
        { class: "connection-title" },
        h(
          "a",
          {
            class: "connection-open",
            href: linkFor(connection.id),
            "aria-current": selected ? "true" : null,
            "aria-describedby": [
              `${key}-health`,
              `${key}-status`,
              `${key}-times`,
              syncing ? `${key}-syncing` : null,
              `${key}-freshness`,
            ]
              .filter(Boolean)
              .join(" "),
            dataset: { focusKey: `open:${connection.id}` },
            onclick: open,
          },
          name,
        ),
        h("span", { class: "muted" }, connection.source_type ?? ""),
      ),
      h("div", { class: "badges" }, withId(statusBadge(status), `${key}-status`)),
    ),
    h("p", { class: "freshness-line" }, withId(freshnessBadge(connection), `${key}-freshness`)),
    h(
      "dl",
      { class: "facts", id: `${key}-times` },
      h("div", {}, h("dt", {}, "First sync"), h("dd", { dataset: { field: "first-sync" } }, timeEl(connection.first_sync_at))),
      h(
        "div",
        {},
        h("dt", {}, "Most recent sync"),
        h(
          "dd",
          { dataset: { field: "last-sync" } },
          timeEl(connection.last_sync_at),
          lastFailed ? h("span", { class: "badge", dataset: { phase: "failed" } }, connection.last_sync_status) : null,
        ),
      ),
    ),
    syncing ? withId(runningSpinner(store.syncsRunning(connection.id)), `${key}-syncing`) : null,
  );
}

function withId(element, id) {
  element.id = id;
  return element;
}
