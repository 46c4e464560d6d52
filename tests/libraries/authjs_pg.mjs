// Auth.js's PostgreSQL adapter (@auth/pg-adapter), driven for tests/tests/libraries.rs.
// Usage: node authjs_pg.mjs SOCKET_DIR PORT DATABASE create|present|load [TOKEN ...]
//   create:  makes the adapter's tables (its schema), a user, and sessions through
//            adapter.createSession expiring at each offset; prints the session tokens
//   present: what Auth.js does when a session token is presented: reads it through the adapter
//            and deletes it (adapter.deleteSession) when it has expired; Auth.js has no other
//            cleanup. Every token is presented.
//   load:    prints the tokens the adapter still returns
// ES modules ignore NODE_PATH: both packages are loaded from the directory it names.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const modules = process.env.NODE_PATH;
const pg = createRequire(path.join(modules, 'noop.js'))('pg');
const { default: PostgresAdapter } = await import(
  pathToFileURL(path.join(modules, '@auth/pg-adapter/index.js')).href);

const OFFSETS = [-3 * 86400, -3600, -120, 120, 3600, 14 * 86400];
const [socketDir, port, database, action, ...tokens] = process.argv.slice(2);
const pool = new pg.Pool({ host: socketDir, port: Number(port), database, user: 'postgres' });
const adapter = PostgresAdapter(pool);

const SCHEMA = `
  CREATE TABLE verification_token (identifier text NOT NULL, expires timestamptz NOT NULL,
                                   token text NOT NULL, PRIMARY KEY (identifier, token));
  CREATE TABLE accounts (id serial, "userId" integer NOT NULL, type varchar(255) NOT NULL,
                         provider varchar(255) NOT NULL, "providerAccountId" varchar(255) NOT NULL,
                         refresh_token text, access_token text, expires_at bigint, id_token text,
                         scope text, session_state text, token_type text, PRIMARY KEY (id));
  CREATE TABLE sessions (id serial, "userId" integer NOT NULL, expires timestamptz NOT NULL,
                         "sessionToken" varchar(255) NOT NULL, PRIMARY KEY (id));
  CREATE TABLE users (id serial, name varchar(255), email varchar(255),
                      "emailVerified" timestamptz, image text, PRIMARY KEY (id));`;

async function main() {
  if (action === 'create') {
    await pool.query(SCHEMA);
    const user = await adapter.createUser({ name: 'a', email: 'a@example.com', emailVerified: null });
    const created = [];
    for (let n = 0; n < 60; n++) {
      const sessionToken = `token-${n}`;
      const expires = new Date(Date.now() + OFFSETS[n % OFFSETS.length] * 1000);
      await adapter.createSession({ sessionToken, userId: user.id, expires });
      created.push(sessionToken);
    }
    return created;
  }
  const all = action === 'present'
    ? (await pool.query('SELECT "sessionToken" FROM sessions')).rows.map((r) => r.sessionToken)
    : tokens;
  const held = [];
  for (const token of all) {
    const found = await adapter.getSessionAndUser(token);
    if (!found) continue;
    if (action === 'present' && found.session.expires.valueOf() < Date.now()) {
      await adapter.deleteSession(token);
      continue;
    }
    held.push(token);
  }
  return action === 'present' ? [] : held;
}

main()
  .then((keys) => console.log(JSON.stringify(keys)))
  .catch((err) => { console.error(err); process.exitCode = 1; })
  .finally(() => pool.end());
