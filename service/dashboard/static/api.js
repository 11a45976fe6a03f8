// The JSON API as the page sees it: one place that adds the bearer token and turns every failure
// (HTTP error bodies {"error", "detail"}, network errors) into an ApiError with a readable message.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

const FRIENDLY = {
  sync_already_in_progress: "A sync of this data is already running. Wait for it to finish, then try again.",
  codat_unavailable: "Codat could not be reached, so nothing was changed. Try again in a minute.",
  codat_auth_failed: "Codat refused Synctrack's API key, so nothing was changed. An administrator needs to fix it.",
  codat_error: "Codat answered with an error, so nothing was changed.",
  rate_limited: "Too many requests just now. Wait a moment, then try again.",
  unauthorized: "Synctrack needs a valid access token: the one given is missing, expired or not valid.",
  forbidden: "You are not allowed to do this.",
  not_reconnectable: "This connection does not need to be linked again.",
  not_found: "Synctrack does not know this item (it may have been deleted).",
  network: "Synctrack could not be reached. Check your network connection and try again.",
  queue_unavailable: "Synctrack is temporarily unavailable. Try again in a minute.",
  stream_unavailable: "Live updates are temporarily unavailable.",
};

/** A sentence for people, and the server's own detail (which names the exact cause) for support. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return { message: "Something went wrong.", detail: String(error?.message ?? error) };
  const message = FRIENDLY[error.code] ?? (error.status >= 500 ? "Synctrack had a problem." : "The request was refused.");
  return { message, detail: error.detail && error.detail !== message ? error.detail : "" };
}

/**
 * `root`: the path Synctrack is served under ("" at the domain root).
 * `token`: optional bearer token; sent as `Authorization: Bearer` and, for the stream (EventSource
 * cannot send headers), as the `access_token` query parameter (honoured when the server is
 * configured with SYNCTRACK_STREAM_TOKEN_IN_QUERY).
 */
export function createApi({ root, token }) {
  function url(path, query = {}) {
    const target = new URL(root + path, location.origin);
    for (const [key, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") target.searchParams.set(key, value);
    }
    return target;
  }

  async function request(method, path, query) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(url(path, query), { method, headers, credentials: "same-origin", cache: "no-store" });
    } catch {
      throw new ApiError(0, "network", "The request did not reach Synctrack.");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new ApiError(response.status, body?.error ?? `http_${response.status}`, body?.detail ?? response.statusText);
    }
    return body;
  }

  /** Every page of a paged list (bounded, so a huge tenant cannot hang the page). */
  async function all(path, query = {}, maxItems = 2000) {
    const items = [];
    let cursor = null;
    do {
      const page = await request("GET", path, { ...query, limit: 500, cursor });
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && items.length < maxItems);
    return items;
  }

  return {
    get: (path, query) => request("GET", path, query),
    post: (path) => request("POST", path),
    delete: (path) => request("DELETE", path),
    all,
    streamUrl(filter) {
      return url("/v1/stream", { ...filter, access_token: token }).toString();
    },
  };
}
