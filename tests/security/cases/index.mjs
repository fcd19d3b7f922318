// Every case of the suite, in the order they run.
import floods from './floods.mjs';
import http from './http.mjs';
import slow from './slow.mjs';
import startup from './startup.mjs';
import streams from './streams.mjs';
import tokens from './tokens.mjs';
import upcoming from './upcoming.mjs';
import ws from './ws.mjs';

export const CASES = [...ws, ...http, ...tokens, ...floods, ...streams, ...startup, ...upcoming, ...slow];
