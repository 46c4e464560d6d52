// connect-pg-simple (express-session's PostgreSQL store), driven for tests/tests/libraries.rs.
// Usage: node connect_pg_simple.js SOCKET_DIR PORT DATABASE create|prune|load [SID ...]
//   create: creates its table (createTableIfMissing) and sets sessions whose cookies expire at
//           each offset; prints the sids
//   prune:  connect-pg-simple's own pruning (pruneSessions)
//   load:   gets each SID through the store; prints the sids it still returns
'use strict';
const session = require('express-session');
const PgStore = require('connect-pg-simple')(session);
const pg = require('pg');

const OFFSETS = [-3 * 86400, -3600, -120, 120, 3600, 14 * 86400];
const [socketDir, port, database, action, ...sids] = process.argv.slice(2);
const pool = new pg.Pool({ host: socketDir, port: Number(port), database, user: 'postgres' });
const store = new PgStore({ pool, createTableIfMissing: true, pruneSessionInterval: false });
const call = (method, ...args) =>
  new Promise((resolve, reject) => store[method](...args, (err, value) => (err ? reject(err) : resolve(value))));

async function main() {
  if (action === 'create') {
    const created = [];
    for (let n = 0; n < 60; n++) {
      const expires = new Date(Date.now() + OFFSETS[n % OFFSETS.length] * 1000);
      const sid = `sid-${n}`;
      await call('set', sid, { cookie: { expires: expires.toISOString(), httpOnly: true, path: '/' }, n });
      created.push(sid);
    }
    return created;
  }
  if (action === 'prune') {
    await call('pruneSessions');
    return [];
  }
  if (action === 'load') {
    const held = [];
    for (const sid of sids) {
      if (await call('get', sid)) held.push(sid);
    }
    return held;
  }
  throw new Error(`unknown action ${action}`);
}

main()
  .then((keys) => console.log(JSON.stringify(keys)))
  .catch((err) => { console.error(err); process.exitCode = 1; })
  .finally(() => { store.close(); return pool.end(); });
