// api: the JSON HTTP endpoints (README "HTTP API"): the server's public facts, register, log in,
// log out, the own profile, and the admin API under /api/admin/. The session lives in the
// HttpOnly chatd_session cookie the server sets; this module never sees the token.

/**
 * One request. Resolves to `{ok, status, data}`; `data` is the parsed JSON body (or null).
 * Network failures resolve to `{ok:false, status:0, data:{error:"network"}}`.
 */
async function call(method, path, body) {
  try {
    const res = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    return { ok: res.ok, status: res.status, data };
  } catch {
    return { ok: false, status: 0, data: { error: "network" } };
  }
}

const get = (path) => call("GET", path);
const post = (path, body = {}) => call("POST", path, body);

/** The error code of a failed call (`network` when the server was not reached). */
export const errorCode = (r) => (r.data && r.data.error) || `http_${r.status}`;

/**
 * `{version, registration: "open"|"closed", first_run, https, max_message_chars}`, or null when
 * the server cannot say (unreachable, or older than this endpoint).
 */
export async function server() {
  const r = await get("/api/server");
  return r.ok && r.data ? r.data : null;
}

/** The logged-in user `{id, name, display_name, color, admin}`, or null (401); throws when the server is unreachable. */
export async function me() {
  const r = await get("/api/me");
  if (r.ok) return r.data.user;
  if (r.status === 401) return null;
  throw new Error(`me: ${r.status}`);
}

export const login = (name, password) => post("/api/login", { name, password });
export const register = (name, password, invite) => post("/api/register", invite ? { name, password, invite } : { name, password });
export const logout = () => post("/api/logout");

// ---- the own profile ------------------------------------------------------------------------

/** `patch`: `{display_name?: string|null, color?: string}` → `{user}`. */
export const updateProfile = (patch) => call("PATCH", "/api/me", patch);
export const changePassword = (current, next) => post("/api/me/password", { current, new: next });
export const logoutOthers = () => post("/api/me/logout-others");

// ---- admin --------------------------------------------------------------------------------

export const admin = {
  users: () => get("/api/admin/users"),
  /** `{name, password?, admin?}` → 201 `{user, password?}` (password only when generated). */
  createUser: (u) => post("/api/admin/users", u),
  setDisabled: (id, disabled) => post(`/api/admin/users/${id}/${disabled ? "disable" : "enable"}`),
  resetPassword: (id) => post(`/api/admin/users/${id}/password`),
  setAdmin: (id, flag) => post(`/api/admin/users/${id}/admin`, { admin: flag }),
  invites: () => get("/api/admin/invites"),
  createInvite: (uses, expiresHours) => post("/api/admin/invites", { uses, expires_hours: expiresHours }),
  deleteInvite: (code) => call("DELETE", `/api/admin/invites/${encodeURIComponent(code)}`),
  settings: () => get("/api/admin/settings"),
  setRegistration: (mode) => call("PUT", "/api/admin/settings", { registration: mode }),
  status: () => get("/api/admin/status"),
  backupUrl: "/api/admin/backup",
};
