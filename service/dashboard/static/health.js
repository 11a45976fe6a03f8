// Health at the head of a card: what the connection needs in plain words, Codat's reason in a sentence, and
// the one next step as the card's main button (reconnect, refresh, wait — or nothing to do). Also the warning
// that a connection will need re-linking soon unless it syncs.

import { h } from "./format.js";

const WORDS = {
  healthy: "Working",
  syncing: "Syncing",
  failing: "Sync failing",
  platform_incident: "Platform having problems",
  pending: "Waiting for the customer to link",
  link_failed: "Linking failed",
  needs_reauth: "Needs signing in again",
  unlinked: "Disconnected",
  deleted: "Deleted",
};

const RISK_WINDOW_MS = 14 * 24 * 3600 * 1000;
const riskDay = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });

/** What a connection's health says, in plain words. */
export function healthWords(connection) {
  return WORDS[connection.health] ?? "Health unknown";
}

/**
 * The banner over a company's connections while their platform has an incident: which platform, and that
 * nothing needs doing; null when no connection shown is affected. Only the connections' own health says so (a
 * company's token never sees the incidents themselves).
 */
export function incidentText(connections) {
  const names = [
    ...new Set(
      connections
        .filter((c) => c.health === "platform_incident" && !c.deleted_at)
        .map((c) => c.platform_name ?? c.platform_key ?? "The platform"),
    ),
  ].sort();
  if (!names.length) return null;
  const who = names.length === 1 ? `${names[0]} is` : `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are`;
  return `${who} having problems across many companies. Nothing you need to do: syncing resumes once it recovers.`;
}

/** "Will need re-linking after 14 Mar unless it syncs", when Codat may deauthorize it within 14 days; else null. */
export function riskText(connection, now = Date.now()) {
  const at = Date.parse(connection.deauthorization_risk_at ?? "");
  if (Number.isNaN(at) || at - now > RISK_WINDOW_MS) return null;
  return `Will need re-linking after ${riskDay.format(new Date(at))} unless it syncs`;
}

/** The main button for the connection's `next_action`, or null when there is nothing to do. */
export function nextActionButton(connection, name, actions, store) {
  const action = connection.next_action;
  if (action === "reconnect") {
    // Codat's link for re-linking is asked for at the click (see actions.reconnect), never the stored one.
    const pending = actions.isPending(`reconnect:${connection.id}`);
    return h(
      "button",
      {
        type: "button",
        class: "button primary next-action",
        disabled: pending,
        dataset: { nextAction: action, focusKey: `next:${connection.id}` },
        onclick: () => actions.reconnect(connection, name, { confirm: true }),
      },
      pending ? "Asking Codat for a link…" : "Reconnect",
    );
  }
  if (action === "refresh") {
    const dataType = connection.health_data_type;
    const key = dataType ? `refresh:${connection.company_id}:${dataType}` : `refresh:${connection.company_id}`;
    const pending = actions.isPending(key);
    // A refresh already running stays the next step until its result comes: shown, not offered twice.
    const running = store.isSyncing(connection.id, dataType);
    const what = dataType ?? "";
    return h(
      "button",
      {
        type: "button",
        class: "button primary next-action",
        disabled: pending || running,
        dataset: { nextAction: action, focusKey: `next:${connection.id}` },
        onclick: () =>
          dataType
            ? actions.refreshType(connection.company_id, dataType, connection.id)
            : actions.refreshConnection(connection.company_id, connection.id, name),
      },
      pending ? "Requesting…" : running ? `Refreshing ${what}…`.replace(" …", "…") : `Refresh ${what}`.trim(),
    );
  }
  if (action === "wait") {
    const syncing = store.isSyncing(connection.id);
    return h(
      "button",
      { type: "button", class: "button next-action", disabled: true, dataset: { nextAction: action } },
      syncing ? "Wait: syncing…" : "Wait",
    );
  }
  return null;
}

/** The card's lead: health in words, the reason, the expiry warning and the next action. */
export function healthHead(connection, name, actions, store, id) {
  const risk = connection.deleted_at ? null : riskText(connection);
  return h(
    "div",
    { class: "health-head", dataset: { health: connection.health ?? "unknown" } },
    h(
      "div",
      { class: "health-text" },
      h("strong", { class: "health-words", id }, healthWords(connection)),
      connection.health_reason ? h("span", { class: "health-reason" }, connection.health_reason) : null,
      risk ? h("span", { class: "deauthorization-risk" }, risk) : null,
    ),
    nextActionButton(connection, name, actions, store),
  );
}
