// Starts a Herald server process for one test file (see tests/support/herald-process.mjs), with the
// suite's secret and default limits, and the endpoints realtime-js needs.
import { freePort, heraldBinary, spawnHerald } from '../../support/herald-process.mjs';
import { SECRET } from './tokens.mjs';

export { freePort, heraldBinary };

/** Settings every test file runs with unless it overrides them. */
export const DEFAULT_ENV = {
  HERALD_MAX_PAYLOAD_BYTES: '262144',
  HERALD_IDLE_TIMEOUT_SECS: '60',
  HERALD_MAX_CHANNELS_PER_CONNECTION: '100',
  HERALD_MAX_JOINS_PER_SECOND: '100',
  HERALD_MAX_MESSAGES_PER_SECOND: '1000',
  HERALD_MAX_CONNECTIONS: '10000',
};

/**
 * Spawns Herald and resolves once /healthz answers 200; `dataDir` reuses a data directory, `args`
 * are more flags for `serve` (`--config <file>`).
 * Returns { pid, port, httpUrl, dataDir, wsEndpoint(path), secret, logs(), stop(), kill9() }.
 */
export async function startHerald({ env = {}, dataDir, args } = {}) {
  const server = await spawnHerald({ secret: SECRET, env: { ...DEFAULT_ENV, ...env }, label: 'herald-compat', dataDir, args });
  return {
    ...server,
    secret: SECRET,
    /** WebSocket endpoint for realtime-js (it appends /websocket itself). */
    wsEndpoint: (path = '/socket') => `ws://127.0.0.1:${server.port}${path}`,
  };
}
