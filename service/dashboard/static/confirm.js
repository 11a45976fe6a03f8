// A confirmation dialog (<dialog>, modal: focus stays inside, Escape cancels, focus returns to the
// button that opened it when it closes).

import { h } from "./format.js";

/** Resolves true only when the person pressed the confirm button. */
export function confirmAction(dialog, { title, paragraphs, confirmLabel, tone = "danger" }) {
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-body").replaceChildren(...paragraphs.map((text) => h("p", {}, text)));
  dialog.querySelector("#confirm-ok").textContent = confirmLabel;
  dialog.querySelector("#confirm-ok").className = `button ${tone}`;
  dialog.returnValue = "";
  const openerKey = document.activeElement?.dataset?.focusKey;
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        // The page may have re-rendered the button that opened the dialog while it was open.
        if (openerKey && (document.activeElement === document.body || !document.activeElement)) {
          document.querySelector(`[data-focus-key="${CSS.escape(openerKey)}"]`)?.focus();
        }
        resolve(dialog.returnValue === "confirm");
      },
      { once: true },
    );
    dialog.showModal();
  });
}

export function disconnectText(name) {
  return {
    title: `Disconnect ${name}?`,
    paragraphs: [
      `Synctrack stops reading new data from ${name}. The data already synced is kept, and so is this connection's history.`,
      "The customer can reconnect later by linking again.",
    ],
    confirmLabel: "Disconnect",
  };
}

export function reconnectText(name) {
  return {
    title: `Reconnect ${name}?`,
    paragraphs: [
      `This opens Codat's link page for ${name} in a new tab, where the customer signs in to ${name} again to give access.`,
      "The connection shows as Linked here as soon as Codat reports it; the data synced before is kept.",
    ],
    confirmLabel: "Open the link page",
    tone: "primary",
  };
}

export function deleteText(name) {
  return {
    title: `Delete the ${name} connection?`,
    paragraphs: [
      `The connection is removed completely: access to ${name} is revoked and the data synced from it is deleted, together with its sync history.`,
      "This cannot be undone. To stop syncing but keep the data, choose Disconnect instead.",
    ],
    confirmLabel: "Delete connection",
  };
}
