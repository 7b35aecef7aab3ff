// The one way the UI talks to the server: the HTTP API with a bearer token. `login` is the
// seam where user accounts will come in later; everything else only asks `session`.

const KEY = 'switchyard.token';

export const session = { token: sessionStorage.getItem(KEY), me: null };

/** A problem+json answer (RFC 9457) as an Error: `status`, `title`, `detail`, `errors`. */
export class Problem extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function call(token, path, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!r.ok) throw new Problem(r.status, json);
  return json;
}

/** Checks a token with `GET /v1/me` and keeps it for this browser tab. */
export async function login(token) {
  const me = await call(token.trim(), '/v1/me');
  session.token = token.trim();
  session.me = me;
  sessionStorage.setItem(KEY, session.token);
  return me;
}

/** Restores the tab's session, if its token still works. */
export async function resume() {
  if (!session.token) return null;
  try { return await login(session.token); } catch { logout(); return null; }
}

export function logout() {
  session.token = null;
  session.me = null;
  sessionStorage.removeItem(KEY);
}

/** May this session do `p` (read, operate, administer)? The server decides anyway. */
export function may(p) {
  return !!(session.me && session.me.permissions && session.me.permissions[p]);
}

export async function api(path, opts) {
  try {
    return await call(session.token, path, opts);
  } catch (e) {
    if (e instanceof Problem && e.status === 401) {
      logout();
      location.hash = '#/login';
    }
    throw e;
  }
}

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
}
