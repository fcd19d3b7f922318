// Starts a Herald process for the end-to-end tests (see tests/support/herald-process.mjs) with a known
// JWT secret, so tests can mint tokens.
import { createHmac } from 'node:crypto';
import { freePort, heraldBinary, spawnHerald } from '../../support/herald-process.mjs';

export { freePort, heraldBinary };

export const SECRET = 'herald-e2e-suite-secret-0123456789-abcdefghijkl';

/** An HS256 JWT for `role`, signed with the suite's secret. */
export function mintToken(role = 'anon', ttlSecs = 3600) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ role, exp: now + ttlSecs, iat: now })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/**
 * Spawns Herald (development mode unless `production`) and resolves once /healthz answers 200.
 * Returns { port, origin, logs(), stop() }.
 */
export async function startHerald({ production = false, env = {} } = {}) {
  const server = await spawnHerald({
    secret: SECRET,
    env: {
      HERALD_MAX_JOINS_PER_SECOND: '100',
      HERALD_IDLE_TIMEOUT_SECS: '60',
      ...(production ? { HERALD_ENV: 'production', HERALD_METRICS_TOKEN: 'e2e-metrics-token' } : {}),
      ...env,
    },
    label: 'herald-e2e',
  });
  return { ...server, origin: server.httpUrl };
}
