// The connection-management page: wiring only. The admin view (/) picks a company; the embedded
// view (/embed/companies/{id}) shows one. State comes from the JSON API, then stays current over
// the live stream (see live.js for how it resumes and resets).

import { createActions } from "./actions.js";
import { createApi } from "./api.js";
import { renderBundles } from "./bundles.js";
import { DetailView } from "./detail.js";
import { refreshTimes } from "./format.js";
import { summaryText } from "./freshness.js";
import { incidentText } from "./health.js";
import { renderList } from "./list.js";
import { LiveFeed } from "./live.js";
import { createMessages } from "./messages.js";
import { Store } from "./store.js";
import { askForToken, takeToken, tokenRights } from "./token.js";

const TIME_REFRESH_MS = 15_000;
const LIVE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Live updates paused, retrying…",
  stopped: "Not connected",
};

const $ = (id) => document.getElementById(id);
const body = document.body;
const embedded = body.dataset.mode === "embed";

const token = takeToken();
const rights = tokenRights(token);
const api = createApi({ root: body.dataset.root, token });
const store = new Store();
const messages = createMessages($("messages"), $("alerts"));
const state = {
  companyId: embedded ? body.dataset.companyId : new URLSearchParams(location.search).get("company"),
  companyName: null,
  selectedId: new URLSearchParams(location.search).get("connection"),
  includeDeleted: false,
  includeDeletedCompanies: false,
  loaded: false,
  failed: false,
  companyNames: new Map(),
  bundles: [],
};
const BUNDLE_EVENTS = new Set(["sync.completed", "sync.failed", "connection.updated", "bundle.ready"]);
let bundlesTimer = null;

function pageUrl({ companyId = state.companyId, connectionId = state.selectedId } = {}) {
  const params = new URLSearchParams();
  if (!embedded && companyId) params.set("company", companyId);
  if (connectionId) params.set("connection", connectionId);
  const query = params.toString();
  return `${location.pathname}${query ? `?${query}` : ""}`;
}

const actions = createActions({
  api,
  messages,
  dialog: $("confirm-dialog"),
  onPending: render,
  afterChange: () => {
    loadBundles();
    if (live.source?.readyState !== EventSource.OPEN) loadCompany().catch(() => {});
    else detail.onChange(state.selectedId);
  },
});

const detail = new DetailView({
  el: $("detail"),
  api,
  store,
  messages,
  actions,
  can: (right) => rights === null || rights.has(right),
  backHref: () => pageUrl({ connectionId: null }),
  onClose: () => select(null, { push: true }),
});

const live = new LiveFeed({
  urlFor: (lastEventId) => api.streamUrl({ company_id: state.companyId, last_event_id: lastEventId }),
  resync: () => loadCompany(),
  onEvent: (name, data) => {
    if (name !== "snapshot" && data.company_id && data.company_id !== state.companyId) return;
    if (BUNDLE_EVENTS.has(name)) soonLoadBundles();
    store.apply(name, data);
  },
  onState: showLiveState,
});

function showLiveState(liveState) {
  $("live-state").dataset.state = liveState;
  $("live-state").querySelector(".live-text").textContent = LIVE_TEXT[liveState];
}

function render() {
  renderList($("connection-list"), $("connections-empty"), store, {
    includeDeleted: state.includeDeleted,
    selectedId: state.selectedId,
    linkFor: (id) => pageUrl({ connectionId: id }),
    onSelect: (id) => select(id, { push: true, focus: true }),
    actions,
    emptyText: (hasDeleted) =>
      !state.loaded
        ? "Loading…"
        : state.failed
          ? "The connections of this company could not be loaded."
          : hasDeleted
          ? "Every connection of this company was deleted."
          : "This company has no connections yet. They appear here as soon as Codat reports them.",
  });
  updatePickerCount();
  const connections = [...store.connections.values()];
  $("company-summary").textContent = state.loaded && !state.failed && connections.length ? summaryText(connections) : "";
  const incident = state.failed ? null : incidentText(connections);
  $("incident-banner").hidden = !incident;
  $("incident-banner").textContent = incident ?? "";
  $("company-tools").hidden = state.failed;
  renderBundles($("bundles"), $("bundle-list"), state.loaded && !state.failed ? state.bundles : [], {
    canRefresh: rights === null || rights.has("refresh"),
    isPending: (name) => actions.isPending(`bundle:${state.companyId}:${name}`),
    onRefresh: (name) => actions.refreshBundle(state.companyId, name),
  });
  $("refresh-all").disabled = !state.loaded || state.failed || actions.isPending(`refresh:${state.companyId}`);
  $("refresh-all").textContent = actions.isPending(`refresh:${state.companyId}`) ? "Requesting…" : "Refresh all data";
  detail.render();
}

/** The picker's "(n connections)" follows what the page sees live. */
function updatePickerCount() {
  const option = embedded || !state.loaded ? null : $("company-select").selectedOptions[0];
  if (!option || option.value !== state.companyId) return;
  const count = store.sorted({ includeDeleted: false }).length;
  option.textContent = companyLabel(state.companyName || state.companyId, count);
}

function companyLabel(name, count) {
  return `${name} (${count} connection${count === 1 ? "" : "s"})`;
}

store.addEventListener("change", (event) => {
  const { connectionId } = event.detail;
  const selected = state.selectedId && store.connections.get(state.selectedId);
  if (selected?.deleted_at && !state.includeDeleted) {
    select(null, { push: false });
  }
  const anyName = [...store.connections.values()].find((c) => c.company_name)?.company_name;
  if (anyName && anyName !== state.companyName) setCompanyName(anyName);
  render();
  detail.onChange(connectionId);
});

function setCompanyName(name) {
  state.companyName = name;
  $("company-name").textContent = name;
  document.title = `${name} · Connections · Synctrack`;
}

/** Read the company's connections and running syncs from the JSON API into the store. */
async function loadCompany() {
  const companyId = state.companyId;
  const [connections, syncs] = await Promise.all([
    api.all(`/v1/companies/${encodeURIComponent(companyId)}/connections`),
    api.all("/v1/syncs/active", { company_id: companyId }),
  ]);
  if (companyId !== state.companyId) return;
  state.loaded = true;
  store.load({ connections, syncs });
  loadBundles();
}

/** Read the company's bundles; a page whose token may not read them (or an older server) shows none. */
async function loadBundles() {
  const companyId = state.companyId;
  let bundles = [];
  try {
    bundles = (await api.get(`/v1/companies/${encodeURIComponent(companyId)}/bundles`)).items;
  } catch (error) {
    console.warn("bundles", error);
  }
  if (companyId !== state.companyId) return;
  state.bundles = bundles;
  render();
}

/** A burst of syncs re-reads the bundles once. */
function soonLoadBundles() {
  clearTimeout(bundlesTimer);
  bundlesTimer = setTimeout(loadBundles, 300);
}

async function showCompany(companyId) {
  live.stop();
  state.companyId = companyId;
  state.loaded = false;
  state.failed = false;
  setCompanyName(state.companyNames.get(companyId) || companyId);
  store.clear();
  state.bundles = [];
  try {
    await loadCompany();
  } catch (error) {
    state.loaded = true;
    messages.error(error, "Loading the company");
    if ([401, 403, 404].includes(error.status)) {
      if (error.status === 401) askForToken($("token-form"));
      state.failed = true;
      showLiveState("stopped");
      render();
      return;
    }
    render();
  }
  live.start();
  if (state.selectedId) detail.open(state.selectedId);
}

function select(connectionId, { push, focus = false }) {
  state.selectedId = connectionId;
  if (push) history.pushState(null, "", pageUrl());
  else history.replaceState(null, "", pageUrl());
  if (connectionId) {
    detail.open(connectionId, { focus });
  } else {
    const wasOpen = !$("detail").hidden;
    detail.close();
    if (wasOpen && push) $("connections-heading").focus();
  }
  render();
}

/** Fill the picker; the company to show, null when there is none, undefined when the list was refused. */
async function loadCompanies() {
  const picker = $("company-picker");
  const selectEl = $("company-select");
  let companies;
  try {
    companies = await api.all("/v1/companies");
  } catch (error) {
    messages.error(error, "Loading companies");
    if (error.status === 401) askForToken($("token-form"));
    return undefined;
  }
  for (const c of companies) if (c.name) state.companyNames.set(c.id, c.name);
  // A deleted company stays listed by the API (audit material); the picker hides it unless asked, or
  // unless the address names it.
  const listed = companies.length;
  companies = companies.filter(
    (c) => !c.deleted_at || state.includeDeletedCompanies || c.id === state.companyId,
  );
  selectEl.replaceChildren(
    ...companies.map((c) => {
      const label = companyLabel(c.name || c.id, c.connection_count);
      return new Option(c.deleted_at ? `${label} — deleted` : label, c.id);
    }),
  );
  picker.hidden = listed === 0;
  if (!companies.length) return null;
  const chosen = companies.find((c) => c.id === state.companyId) ?? companies[0];
  selectEl.value = chosen.id;
  return chosen.id;
}

async function start() {
  $("refresh-all").addEventListener("click", () =>
    actions.refreshAll(state.companyId, state.companyName || state.companyId),
  );
  $("show-deleted").addEventListener("change", (event) => {
    state.includeDeleted = event.currentTarget.checked;
    render();
  });
  $("company-picker").addEventListener("submit", (event) => event.preventDefault());
  $("show-deleted-companies").addEventListener("change", async (event) => {
    state.includeDeletedCompanies = event.currentTarget.checked;
    await loadCompanies();
  });
  $("company-select").addEventListener("change", (event) => {
    state.selectedId = null;
    detail.close();
    history.pushState(null, "", pageUrl({ companyId: event.currentTarget.value, connectionId: null }));
    showCompany(event.currentTarget.value);
  });
  window.addEventListener("popstate", () => {
    const params = new URLSearchParams(location.search);
    const companyId = embedded ? state.companyId : params.get("company") || state.companyId;
    state.selectedId = params.get("connection");
    if (companyId !== state.companyId) {
      $("company-select").value = companyId;
      detail.close();
      showCompany(companyId);
    } else {
      select(state.selectedId, { push: false });
    }
  });
  setInterval(() => refreshTimes(), TIME_REFRESH_MS);

  if (!embedded) {
    const companyId = await loadCompanies();
    if (!companyId) {
      const failed = companyId === undefined;
      $("company-name").textContent = failed ? "Companies" : "No companies yet";
      $("connections-empty").hidden = false;
      $("connections-empty").textContent = failed
        ? "The companies could not be loaded."
        : "Synctrack has not heard of any company yet. Companies appear here once Codat sends their first webhook.";
      showLiveState("stopped");
      $("company-tools").hidden = true;
      return;
    }
    history.replaceState(null, "", pageUrl({ companyId }));
    state.companyId = companyId;
  }
  await showCompany(state.companyId);
}

start();
