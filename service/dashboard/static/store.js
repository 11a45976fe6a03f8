// The page's state: the company's connections and the syncs running now. Filled from the JSON API,
// kept current by stream events; every change is announced as a "change" event naming the
// connection it touched (null when everything may have changed).

export class Store extends EventTarget {
  constructor() {
    super();
    this.connections = new Map();
    this.active = new Map();
  }

  clear() {
    this.connections.clear();
    this.active.clear();
    this.changed(null);
  }

  /** Replace everything with what the JSON API or a snapshot says. */
  load({ connections, syncs }) {
    if (connections) {
      this.connections.clear();
      for (const connection of connections) this.connections.set(connection.id, strip(connection));
    }
    if (syncs) {
      this.active.clear();
      for (const sync of syncs) if (sync.phase === "active") this.active.set(sync.id, strip(sync));
    }
    this.changed(null);
  }

  /** Apply one stream event; `reason` tells listeners why (e.g. a finished sync adds history). */
  apply(name, data) {
    if (name === "snapshot") {
      this.load({
        connections: data.connections,
        syncs: data.syncs ?? data.active_syncs,
      });
      return;
    }
    if (name === "connection.updated") {
      this.connections.set(data.id, strip(data));
      if (data.sync_active === false) {
        for (const [id, sync] of this.active) if (sync.connection_id === data.id) this.active.delete(id);
      }
      this.changed(data.id, name);
      return;
    }
    // A delayed sync is still running, at Codat's own pace: the same sync with what Codat said.
    if (name === "sync.started" || name === "sync.delayed") this.active.set(data.id, strip(data));
    else if (name === "sync.completed" || name === "sync.failed") this.active.delete(data.id);
    else return;
    this.changed(data.connection_id, name);
  }

  changed(connectionId, reason = "load") {
    this.dispatchEvent(new CustomEvent("change", { detail: { connectionId, reason } }));
  }

  activeSyncs(connectionId) {
    return [...this.active.values()].filter((sync) => sync.connection_id === connectionId);
  }

  /** The running syncs of a connection (of one data type, with those of every type, if `dataType` is given). */
  syncsRunning(connectionId, dataType = null) {
    return this.activeSyncs(connectionId).filter(
      (sync) => dataType === null || sync.data_type === dataType || sync.data_type === "*",
    );
  }

  isSyncing(connectionId, dataType = null) {
    return this.syncsRunning(connectionId, dataType).length > 0;
  }

  /** Connections in display order: live ones by platform name, deleted ones last. */
  sorted({ includeDeleted }) {
    return [...this.connections.values()]
      .filter((c) => includeDeleted || !c.deleted_at)
      .sort(
        (a, b) =>
          Boolean(a.deleted_at) - Boolean(b.deleted_at) ||
          String(a.platform_name ?? "").localeCompare(String(b.platform_name ?? "")) ||
          a.id.localeCompare(b.id),
      );
  }
}

function strip(item) {
  const { event_id: _ignored, ...rest } = item;
  return rest;
}
