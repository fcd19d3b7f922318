// Members of private channels for the authorization suites (database policies and configured
// rules): a realtime-js client signed in as a token, its first subscribe status, and a subscribed
// member that collects broadcasts and `system` messages.
import { listen, makeClient, subscribe, subscribed, wire } from './client.mjs';
import { Inbox } from './wait.mjs';

/** A join's answer or a broadcast on a debug build sharing two cores. */
const MS = 10_000;

/** A realtime-js client signed in as `jwt`. */
export function clientAs(server, jwt) {
  const client = makeClient(server, { token: jwt });
  client.setAuth(jwt);
  return client;
}

/** The first status realtime-js reports for `channel`'s subscribe(), with the client's frames on timeout. */
export async function firstStatus(channel) {
  const statuses = subscribe(channel);
  return statuses.next(MS, () => `a subscribe status on ${channel.topic}; ${wire(channel.socket)}`);
}

/** A private channel `name` on a client signed in as `jwt`, subscribed, collecting broadcasts. */
export async function privateMember(server, jwt, name, config = {}) {
  const client = clientAs(server, jwt);
  const channel = client.channel(name, { config: { private: true, broadcast: { ack: true }, ...config } });
  const inbox = listen(channel);
  const system = new Inbox(`system messages on ${name}`);
  channel.on('system', {}, (payload) => system.push(payload));
  const statuses = await subscribed(channel, MS);
  return { client, channel, inbox, system, statuses };
}
