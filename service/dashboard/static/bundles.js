// The company's bundles (SYNCTRACK_BUNDLES): the data types a report reads together, each shown with the time
// its data is "as of" (the earliest of its members' latest successful syncs) and a "Refresh what's stale" button.

import { dataTypeLabel, h, keepingFocus, whenEl } from "./format.js";

/**
 * sectionEl: the bundles' <section> (hidden when there are none); listEl: its <ul>.
 * canRefresh: whether the token may refresh; isPending(name): a refresh of it is on its way;
 * onRefresh(name): ask for it.
 */
export function renderBundles(sectionEl, listEl, bundles, { canRefresh, isPending, onRefresh }) {
  sectionEl.hidden = bundles.length === 0;
  keepingFocus(() => listEl.replaceChildren(...bundles.map((b) => item(b, canRefresh, isPending(b.name), onRefresh))));
}

function item(bundle, canRefresh, pending, onRefresh) {
  const stale = bundle.stale_data_types.map(dataTypeLabel);
  const id = `bundle-${bundle.name}`;
  return h(
    "li",
    { class: "bundle", dataset: { bundle: bundle.name, complete: bundle.complete ? "true" : "false" } },
    h("span", { class: "bundle-name", id: `${id}-name` }, bundle.name),
    h(
      "span",
      { class: "bundle-as-of", dataset: { field: "as-of" } },
      bundle.complete ? ["as of ", whenEl(bundle.as_of)] : "not complete: a member has never synced",
    ),
    h(
      "span",
      { class: "bundle-stale muted", id: `${id}-stale`, dataset: { field: "stale" } },
      stale.length ? `Stale: ${stale.join(", ")}` : "Everything up to date",
    ),
    h(
      "button",
      {
        type: "button",
        class: "button",
        disabled: !canRefresh || pending || stale.length === 0,
        "aria-describedby": `${id}-name ${id}-stale`,
        dataset: { focusKey: `bundle:${bundle.name}` },
        onclick: () => onRefresh(bundle.name),
      },
      pending ? "Requesting…" : "Refresh what's stale",
    ),
  );
}
