// Minimal account page: log in, register, log out. All user text is set with textContent.
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const res = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  return { ok: res.ok, status: res.status, data };
}

function show(user) {
  $("auth").hidden = !!user;
  $("home").hidden = !user;
  if (user) {
    $("me").textContent = user.name;
    $("admin-badge").hidden = !user.admin;
  }
}

async function submit(path) {
  $("error").textContent = "";
  const r = await api(path, { name: $("name").value, password: $("password").value });
  if (r.ok) show(r.data.user);
  else $("error").textContent = (r.data && r.data.message) || `error ${r.status}`;
}

$("auth-form").addEventListener("submit", (e) => { e.preventDefault(); submit("/api/login"); });
$("register").addEventListener("click", () => submit("/api/register"));
$("logout").addEventListener("click", async () => { await api("/api/logout", {}); show(null); });

const me = await api("/api/me");
show(me.ok ? me.data.user : null);
