// Messages for people: outcomes of their actions and errors, read out by screen readers (the
// containers are live regions), never only in the console.

import { describeError } from "./api.js";
import { h } from "./format.js";

const INFO_LIFETIME_MS = 8000;
const MAX_SHOWN = 3;

export function createMessages(politeEl, alertEl) {
  function show(container, kind, message, detail) {
    const item = h(
      "div",
      { class: "message", dataset: { kind } },
      h("p", {}, message),
      detail ? h("p", { class: "message-detail" }, detail) : null,
      h("button", { type: "button", class: "dismiss", "aria-label": "Dismiss message", onclick: () => item.remove() }, "×"),
    );
    container.append(item);
    while (container.children.length > MAX_SHOWN) container.firstElementChild.remove();
    return item;
  }

  return {
    info(message) {
      const item = show(politeEl, "info", message, "");
      setTimeout(() => item.remove(), INFO_LIFETIME_MS);
    },
    /** `error` is an ApiError (or anything thrown); `context` says what was being done. */
    error(error, context = "") {
      const { message, detail } = describeError(error);
      show(alertEl, "error", context ? `${context}: ${message}` : message, detail);
    },
    clearErrors() {
      alertEl.replaceChildren();
    },
  };
}
