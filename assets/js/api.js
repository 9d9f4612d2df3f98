// api: the JSON account endpoints (register, log in, log out, who am I). The session lives in
// the HttpOnly chatd_session cookie the server sets; this module never sees the token.

/**
 * One request. Resolves to `{ok, status, data}`; `data` is the parsed JSON body (or null).
 * Network failures resolve to `{ok:false, status:0, data:{error:"network"}}`.
 */
async function call(path, body) {
  try {
    const res = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
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

/** The logged-in user `{id, name, admin}`, or null (401); throws when the server is unreachable. */
export async function me() {
  const r = await call("/api/me");
  if (r.ok) return r.data.user;
  if (r.status === 401) return null;
  throw new Error(`me: ${r.status}`);
}

export const login = (name, password) => call("/api/login", { name, password });
export const register = (name, password) => call("/api/register", { name, password });
export const logout = () => call("/api/logout", {});
