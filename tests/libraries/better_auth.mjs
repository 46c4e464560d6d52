// Better Auth on PostgreSQL (its built-in Kysely adapter over a pg Pool), driven for
// tests/tests/libraries.rs. Several versions are installed side by side under npm aliases; the
// env BETTER_AUTH_PACKAGE names the one to run (e.g. better-auth-1-3-10).
// Usage: node better_auth.mjs SOCKET_DIR PORT DATABASE create|present|load [TOKEN ...]
//   create:  makes its tables with its own migrations (getMigrations().runMigrations()), signs a
//            user up (auth.api.signUpEmail, no auto sign-in), and creates sessions for it through
//            its internal adapter (ctx.internalAdapter.createSession, what sign-in uses, with the
//            expiresAt override) expiring at each offset; prints the session tokens
//   present: what Better Auth does when a session cookie is presented: auth.api.getSession
//            deletes the session when it has expired; Better Auth has no other cleanup. Every
//            token in the table is presented (signed as its cookie), with disableRefresh so that
//            live sessions keep their expiry.
//   load:    gets each TOKEN through auth.api.getSession; prints the tokens it still returns
// ES modules ignore NODE_PATH: the packages are loaded from the directory it names.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const modules = process.env.NODE_PATH;
const packageName = process.env.BETTER_AUTH_PACKAGE;
const packageDir = path.join(modules, packageName);
const version = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8')).version;
// The ES module a subpath of the package exports.
const exported = (subpath) => {
  const exports = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8')).exports;
  const entry = exports[subpath];
  if (!entry) return null;
  const target = entry.import?.default ?? entry.import ?? entry.default;
  return import(pathToFileURL(path.join(packageDir, target)).href);
};
const pg = createRequire(path.join(modules, 'noop.js'))('pg');
// better-call (the version this Better Auth depends on) signs its cookies.
const { serializeSignedCookie } = createRequire(path.join(packageDir, 'package.json'))('better-call');
const { betterAuth } = await exported('.');
const { getMigrations } = (await exported('./db/migration')) ?? (await exported('./db'));

const OFFSETS = [-3 * 86400, -3600, -120, 120, 3600, 14 * 86400];
const SECRET = 'session_gc tests: a Better Auth secret long enough';
const [socketDir, port, database, action, ...tokens] = process.argv.slice(2);
const pool = new pg.Pool({ host: socketDir, port: Number(port), database, user: 'postgres' });
const options = {
  database: pool,
  secret: SECRET,
  baseURL: 'http://localhost:3000',
  emailAndPassword: { enabled: true, autoSignIn: false },
  telemetry: { enabled: false },
};
const auth = betterAuth(options);

async function main() {
  const ctx = await auth.$context;
  if (action === 'create') {
    const { runMigrations } = await getMigrations(options);
    await runMigrations();
    const { user } = await auth.api.signUpEmail({
      body: { name: 'a', email: 'a@example.com', password: 'a password for the tests' },
    });
    const created = [];
    for (let n = 0; n < 60; n++) {
      const override = { expiresAt: new Date(Date.now() + OFFSETS[n % OFFSETS.length] * 1000) };
      // 1.3: createSession(userId, ctx, dontRememberMe, override, overrideAll); later: no ctx.
      const session = version.startsWith('1.3.')
        ? await ctx.internalAdapter.createSession(user.id, {}, false, override, true)
        : await ctx.internalAdapter.createSession(user.id, false, override, true);
      created.push(session.token);
    }
    return created;
  }
  const all = action === 'present'
    ? (await pool.query('SELECT token FROM session')).rows.map((r) => r.token)
    : tokens;
  const held = [];
  for (const token of all) {
    const cookie = (await serializeSignedCookie(ctx.authCookies.sessionToken.name, token, ctx.secret))
      .split(';')[0];
    const found = await auth.api.getSession({
      headers: new Headers({ cookie }),
      query: { disableRefresh: true },
    });
    if (found?.session?.token === token) held.push(token);
  }
  return action === 'present' ? [] : held;
}

main()
  .then((keys) => console.log(JSON.stringify(keys)))
  .catch((err) => { console.error(err); process.exitCode = 1; })
  .finally(() => pool.end());
