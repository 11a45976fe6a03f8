// The bearer token of this browser tab. A product opens the page with ?token=… (or ?access_token=);
// an admin without one is offered a form. The token is kept in sessionStorage (this tab only, gone
// when it closes) and taken out of the address bar so it is not bookmarked, shared or logged.

const TOKEN_KEY = "synctrack.token";

export function takeToken() {
  const params = new URLSearchParams(location.search);
  const given = params.get("token") ?? params.get("access_token");
  if (!given) return stored();
  remember(given);
  params.delete("token");
  params.delete("access_token");
  const query = params.toString();
  history.replaceState(history.state, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
  return given;
}

/** Show `form` (asks for a token); a submitted token is kept and the page starts again with it. */
export function askForToken(form) {
  form.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = new FormData(form).get("token")?.toString().trim();
    if (!token) return;
    const url = new URL(location.href);
    url.searchParams.set("token", token);
    if (!remember(token)) location.assign(url);
    else location.reload();
  });
}

/**
 * The rights of a company-scoped token, read from the token itself (`st1.<payload>.<signature>`: the
 * payload is signed, not secret, base64url JSON with the rights as `r`); null for an admin token or none,
 * whose rights only the API knows. The page uses it to leave out what the token may not do; the API
 * refuses it either way.
 */
export function tokenRights(token) {
  if (!token?.startsWith("st1.")) return null;
  try {
    const payload = token.slice(4).split(".")[0].replaceAll("-", "+").replaceAll("_", "/");
    const claims = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "=")));
    return new Set(Array.isArray(claims.r) ? claims.r : []);
  } catch {
    return new Set(); // not a token Synctrack minted: the API will say so
  }
}

function stored() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage can be off (e.g. a sandboxed frame)
  }
}

function remember(token) {
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
    return true;
  } catch {
    return false;
  }
}
