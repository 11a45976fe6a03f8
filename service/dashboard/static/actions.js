// What the buttons do: refresh (all data, one data type), disconnect, delete, reconnect. Each call is
// announced in plain words; a failure shows the API's error as a readable message. The spinner and
// the status change themselves arrive on the live stream, like everyone else's changes.

import { confirmAction, deleteText, disconnectText, reconnectText } from "./confirm.js";
import { safeUrl } from "./format.js";

const enc = encodeURIComponent;

/**
 * api, messages: from api.js / messages.js; dialog: the <dialog>; onPending(): re-render (a pending
 * action disables its button); afterChange(): called after a successful action, so the page can
 * re-read state when the stream is not connected.
 */
export function createActions({ api, messages, dialog, onPending, afterChange }) {
  const pending = new Set();

  async function run(key, context, call, success) {
    if (pending.has(key)) return;
    pending.add(key);
    onPending();
    messages.clearErrors();
    try {
      await call();
      messages.info(typeof success === "function" ? success() : success);
      afterChange();
    } catch (error) {
      messages.error(error, context);
    } finally {
      pending.delete(key);
      onPending();
    }
  }

  return {
    isPending: (key) => pending.has(key),

    refreshAll(companyId, companyName) {
      return run(
        `refresh:${companyId}`,
        "Refresh all data",
        () => api.post(`/v1/companies/${enc(companyId)}/refresh`),
        `Refresh requested: Codat is fetching all data for ${companyName}.`,
      );
    },

    /** One data type; of one connection when `connectionId` is given. */
    refreshType(companyId, dataType, connectionId = null) {
      const only = connectionId ? `?connection_id=${enc(connectionId)}` : "";
      return run(
        `refresh:${companyId}:${dataType}`,
        `Refresh ${dataType}`,
        () => api.post(`/v1/companies/${enc(companyId)}/refresh/${enc(dataType)}${only}`),
        `Refresh requested: Codat is fetching ${dataType}.`,
      );
    },

    /** The members of a bundle that are not fresh, on every connection that has them. */
    refreshBundle(companyId, name) {
      return run(
        `bundle:${companyId}:${name}`,
        `Refresh ${name}`,
        () => api.post(`/v1/companies/${enc(companyId)}/bundles/${enc(name)}/refresh`),
        `Refresh requested: Codat is fetching what is stale in ${name}.`,
      );
    },

    /** Every data type of one connection. */
    refreshConnection(companyId, connectionId, name) {
      return run(
        `refresh:${companyId}`,
        `Refresh ${name}`,
        () => api.post(`/v1/companies/${enc(companyId)}/refresh?connection_id=${enc(connectionId)}`),
        `Refresh requested: Codat is fetching all data from ${name}.`,
      );
    },

    async disconnect(connection, name) {
      if (!(await confirmAction(dialog, disconnectText(name)))) return;
      await run(
        `disconnect:${connection.id}`,
        `Disconnect ${name}`,
        () => api.post(`/v1/connections/${enc(connection.id)}/unlink`),
        `${name} is being disconnected. Its data is kept.`,
      );
    },

    /**
     * Open Codat's link page for the connection in a new tab, at a link Synctrack asks Codat for now
     * (`POST /v1/connections/{id}/reconnect`): Codat's one-time links die once used or a day old, so the
     * connection's stored `link_url` will not do. With `confirm`, only after a confirmation.
     */
    async reconnect(connection, name, { confirm = false } = {}) {
      const key = `reconnect:${connection.id}`;
      if (pending.has(key) || (confirm && !(await confirmAction(dialog, reconnectText(name))))) return;
      // Opened at the click, where no pop-up blocker stops it, and sent to the link once Synctrack has it.
      const tab = window.open("", "_blank");
      if (tab) tab.opener = null; // the link page must not reach back into this one
      let opened = tab !== null;
      await run(
        key,
        `Reconnect ${name}`,
        async () => {
          try {
            const answer = await api.post(`/v1/connections/${enc(connection.id)}/reconnect`);
            const url = safeUrl(answer.link_url);
            if (!url) throw new Error("Codat's link for this connection is not a web address.");
            if (tab) tab.location.replace(url);
            else opened = window.open(url, "_blank", "noopener") !== null;
          } catch (error) {
            tab?.close();
            throw error;
          }
        },
        () =>
          opened
            ? `Codat's link page for ${name} opened in a new tab.`
            : `Codat's link page for ${name} could not open: allow pop-ups for this page, then try again.`,
      );
    },

    async remove(connection, name) {
      if (!(await confirmAction(dialog, deleteText(name)))) return;
      await run(
        `delete:${connection.id}`,
        `Delete ${name}`,
        () => api.delete(`/v1/connections/${enc(connection.id)}`),
        `The ${name} connection was deleted.`,
      );
    },
  };
}
