// The live feed: one EventSource on /v1/stream for the page's filter.
//
// After a network drop the browser reconnects by itself and sends Last-Event-ID, so the server
// replays exactly what was missed. When the browser gives up instead (an HTTP error answer, e.g.
// 503 while Redis restarts: EventSource does not retry those), the page opens a new stream later
// with the last id it saw as `last_event_id`, which resumes the same way. A `reset` event (the id
// was too old, or this client fell behind) means: re-read the state, then start afresh.

export const STREAM_EVENTS = [
  "snapshot",
  "connection.updated",
  "sync.started",
  "sync.delayed",
  "sync.completed",
  "sync.failed",
];

const MAX_BACKOFF_MS = 30_000;

export class LiveFeed {
  /**
   * urlFor(lastEventId): the stream URL for the current filter, resuming after lastEventId if given.
   * resync(): re-read the state from the JSON API (awaited before the new stream opens, so the
   *   stream's snapshot and events are always newer than what it read).
   * onEvent(name, data): one stream event, data parsed.
   * onState(state): "connecting" | "live" | "reconnecting" | "offline".
   */
  constructor({ urlFor, resync, onEvent, onState }) {
    Object.assign(this, { urlFor, resync, onEvent, onState });
    this.source = null;
    this.failures = 0;
    this.retryTimer = null;
    this.generation = 0;
    this.lastEventId = null;
  }

  /** Open the stream: resuming after the last event seen if `resume`, else from a snapshot. */
  start({ resume = false } = {}) {
    this.stop();
    const generation = ++this.generation;
    if (!resume) this.lastEventId = null;
    this.onState(resume ? "reconnecting" : "connecting");
    const source = new EventSource(this.urlFor(resume ? this.lastEventId : null));
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.onState("live");
    };
    source.onerror = () => {
      if (generation !== this.generation) return;
      if (source.readyState === EventSource.CLOSED) this.restartLater();
      else this.onState("reconnecting");
    };
    for (const name of STREAM_EVENTS) {
      source.addEventListener(name, (event) => {
        if (generation !== this.generation) return;
        if (event.lastEventId) this.lastEventId = event.lastEventId;
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        this.onEvent(name, data);
      });
    }
    source.addEventListener("reset", () => {
      if (generation === this.generation) this.restartFresh();
    });
  }

  stop() {
    this.generation++;
    clearTimeout(this.retryTimer);
    this.source?.close();
    this.source = null;
  }

  /** Re-read the state, then open a new stream without an id: it starts with a snapshot. */
  async restartFresh() {
    this.stop();
    const generation = this.generation;
    this.onState("reconnecting");
    try {
      await this.resync();
    } catch {
      if (generation === this.generation) this.restartLater();
      return;
    }
    if (generation === this.generation) this.start();
  }

  restartLater() {
    this.stop();
    this.onState("offline");
    this.failures++;
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(this.failures - 1, 5));
    const jittered = delay / 2 + Math.random() * (delay / 2);
    this.retryTimer = setTimeout(
      () => (this.lastEventId ? this.start({ resume: true }) : this.restartFresh()),
      jittered,
    );
  }
}
