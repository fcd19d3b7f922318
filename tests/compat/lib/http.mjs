// HTTP calls to Herald's API: POST (broadcast), GET (channels, presence, metrics).

/**
 * POSTs to `path` on `server`. `json` is sent as application/json; otherwise `body` is sent
 * with `contentType`. `token` becomes `Authorization: Bearer`. Resolves { status, text, json }.
 */
export async function post(server, path, { json, body, contentType, token, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  let payload = body;
  if (json !== undefined) {
    payload = JSON.stringify(json);
    h['content-type'] = 'application/json';
  } else if (contentType) {
    h['content-type'] = contentType;
  }
  const res = await fetch(`${server.httpUrl}${path}`, {
    method: 'POST',
    headers: h,
    body: payload,
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: res.status, text, json: parsed };
}

/** Body of a batch broadcast request with one message per entry of `messages`. */
export function batch(...messages) {
  return { messages: messages.map((m) => ({ private: false, ...m })) };
}

/** GETs `path` on `server` with `token` as `Authorization: Bearer`. Resolves { status, text, json }. */
export async function get(server, path, { token, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  const res = await fetch(`${server.httpUrl}${path}`, { headers: h, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: res.status, text, json: parsed };
}

/** The value of the Prometheus sample `name` (without labels) on GET /metrics, or undefined. */
export async function metric(server, name) {
  const { text } = await get(server, '/metrics');
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{}`));
  return line === undefined ? undefined : Number(line.trim().split(/\s+/).pop());
}
