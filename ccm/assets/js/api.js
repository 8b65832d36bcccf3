// The REST API client: one fetch wrapper that turns the API's {"error", "reason"} answers
// into an ApiError whose message is the reason in plain words.

export class ApiError extends Error {
  constructor(status, code, reason) {
    super(reason);
    this.status = status;
    this.code = code;
  }
}

let unauthorized = () => {};

/** Called on every 401 answer (the session ended): main.js shows the login form. */
export function onUnauthorized(f) {
  unauthorized = f;
}

/** Path segment of a name (names may hold spaces and dots). */
export const seg = (s) => encodeURIComponent(String(s));

/** Sends a request; answers {status, data} or throws ApiError. `body` is sent as JSON. */
export async function request(method, path, body) {
  const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, 'network', `Cannot reach the controller (${e.message}).`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok) {
    const reason = (data && typeof data === 'object' && data.reason)
      || (typeof data === 'string' && data.length < 300 && data)
      || `${res.status} ${res.statusText}`;
    const code = (data && typeof data === 'object' && data.error) || `http_${res.status}`;
    if (res.status === 401) unauthorized();
    throw new ApiError(res.status, code, reason);
  }
  return { status: res.status, data };
}

/** Sends a request and answers the JSON body. */
export async function api(method, path, body) {
  return (await request(method, path, body)).data;
}

export const get = (path) => api('GET', path);
