//! Session stores of web frameworks, recognized by the shape of their table, so that a
//! `register()` without a rule can say the call that fits (README, "Frameworks", has each
//! recipe with its reasons). Only names and types are read; nothing here decides a purge.

use crate::error::GcResult;
use crate::policy::{ColumnKind, TableInfo};
use crate::sql;
use pgrx::spi::quote_literal;

/// How the store's time column holds time, when it is a naive `timestamp`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TimeColumn {
    /// timestamptz as the store creates it; a naive column the library itself fills in UTC.
    LibraryWritesUtc,
    /// A naive column holds the wall-clock time of a zone only the app knows (its process's or
    /// its connections' zone). The hint then names no zone: it says where to read it, because a
    /// guess that is wrong deletes live sessions.
    AppZone { where_to_read_it: &'static str },
    /// Epoch seconds or milliseconds in an integer column: no zone.
    Epoch,
}

struct Store {
    name: &'static str,
    /// Columns the table has, exactly as the store creates them; the first is the time column.
    columns: &'static [&'static str],
    time_column: TimeColumn,
    /// register()'s arguments after the table.
    arguments: &'static str,
    /// What to turn off in the framework, or what to know.
    note: &'static str,
}

/// The placeholder a hint leaves for a zone only the app knows.
const APP_ZONE_PLACEHOLDER: &str = ":'app_zone'";

/// Auth.js's tables, sessions and verification tokens alike: the same adapters write both.
const AUTHJS_ZONE: TimeColumn = TimeColumn::AppZone {
    where_to_read_it: "'UTC' with the Prisma adapter (Prisma writes UTC); with the pg adapter or another node-postgres one, the Node.js process's zone",
};

/// Most specific first: a table matching several stores gets the first.
const STORES: &[Store] = &[
    Store {
        name: "Django (django.contrib.sessions)",
        columns: &["expire_date", "session_key", "session_data"],
        time_column: TimeColumn::AppZone {
            where_to_read_it: "Django's TIME_ZONE setting (Django's own migration makes expire_date timestamptz on PostgreSQL, which needs no zone)",
        },
        arguments: "expires_column => 'expire_date'",
        note: "Drop the clearsessions cron job.",
    },
    Store {
        name: "Spring Session JDBC",
        columns: &["expiry_time", "primary_id", "session_id"],
        time_column: TimeColumn::Epoch,
        arguments: "expires_column => 'expiry_time', epoch_unit => 'ms'",
        note: "Set spring.session.jdbc.cleanup-cron=- to switch off its own purge (every minute).",
    },
    Store {
        name: "Symfony PdoSessionHandler",
        columns: &["sess_lifetime", "sess_id", "sess_data", "sess_time"],
        time_column: TimeColumn::Epoch,
        arguments: "expires_column => 'sess_lifetime', epoch_unit => 's'",
        note: "sess_lifetime holds the expiry moment (Symfony 4.4 and later); set framework.session.gc_probability to 0.",
    },
    Store {
        name: "Laravel (database session driver)",
        columns: &["last_activity", "id", "payload"],
        time_column: TimeColumn::Epoch,
        arguments: "idle_column => 'last_activity', idle_timeout => '120 minutes', epoch_unit => 's'",
        note: "idle_timeout is SESSION_LIFETIME in minutes (120 by default); set the session lottery to [0, 100].",
    },
    Store {
        name: "Rails (activerecord-session_store)",
        columns: &["updated_at", "session_id", "data"],
        time_column: TimeColumn::LibraryWritesUtc,
        arguments: "idle_column => 'updated_at', idle_timeout => '30 days'",
        note: "As db:sessions:trim does (SESSION_DAYS_TRIM_THRESHOLD, 30 days); Rails writes UTC.",
    },
    Store {
        name: "connect-pg-simple (express-session)",
        columns: &["expire", "sid", "sess"],
        time_column: TimeColumn::AppZone {
            where_to_read_it: "SHOW TimeZone run through the app's own connection pool (connect-pg-simple writes expire in its connections' TimeZone)",
        },
        arguments: "expires_column => 'expire'",
        note: "Set pruneSessionInterval: false.",
    },
    Store {
        name: "Flask-Session (SQLAlchemy)",
        columns: &["expiry", "session_id", "data"],
        time_column: TimeColumn::LibraryWritesUtc,
        arguments: "expires_column => 'expiry'",
        note: "Flask-Session writes expiry in UTC; set SESSION_CLEANUP_N_REQUESTS to None.",
    },
    Store {
        name: "Go scs postgresstore",
        columns: &["expiry", "token", "data"],
        time_column: TimeColumn::AppZone {
            where_to_read_it: "the Go process's local zone (its TZ variable), which its driver writes a naive column in",
        },
        arguments: "expires_column => 'expiry'",
        note: "Create the store with NewWithCleanupInterval(db, 0) to stop its cleanup goroutine.",
    },
    Store {
        name: "Auth.js / NextAuth (pg or Prisma adapter)",
        columns: &["expires", "sessionToken", "userId"],
        time_column: AUTHJS_ZONE,
        arguments: "expires_column => 'expires'",
        note: "Auth.js deletes an expired session only when it is presented.",
    },
    Store {
        name: "Auth.js / NextAuth verification tokens (pg or Prisma adapter)",
        columns: &["expires", "identifier", "token"],
        time_column: AUTHJS_ZONE,
        arguments: "expires_column => 'expires'",
        note: "Auth.js deletes a verification token only when it is used.",
    },
    Store {
        name: "Better Auth",
        columns: &["expiresAt", "token", "userId"],
        // Before 1.3.11 its migration made "expiresAt" timestamp, filled with Node's local time.
        time_column: TimeColumn::AppZone {
            where_to_read_it: "the Node.js process's zone (its TZ variable, or node -p 'Intl.DateTimeFormat().resolvedOptions().timeZone' where the app runs): Better Auth before 1.3.11 writes its local time",
        },
        arguments: "expires_column => 'expiresAt'",
        note: "Better Auth deletes an expired session only when it is presented.",
    },
    Store {
        name: "Lucia-style user_session",
        columns: &["expires_at", "id", "user_id"],
        time_column: TimeColumn::AppZone {
            where_to_read_it: "the zone the app's driver writes a naive column in (node-postgres: the Node.js process's zone)",
        },
        arguments: "expires_column => 'expires_at'",
        note: "Replaces a scheduled deleteExpiredSessions().",
    },
    Store {
        name: "Phoenix phx.gen.auth (users_tokens)",
        columns: &["inserted_at", "token", "context"],
        time_column: TimeColumn::LibraryWritesUtc,
        arguments: "created_column => 'inserted_at', max_age => '60 days'",
        note: "max_age is the longest validity of any context (session tokens: 60 days in Phoenix 1.7, 14 in 1.8), so no valid token is deleted; one policy per context (policy_name, row_filter => $$context = 'reset_password'$$, its own max_age) purges each at its own time; Ecto writes UTC.",
    },
];

/// The register() call for a table shaped like a known store's, as a hint; None for others.
pub fn suggested_call(info: &TableInfo) -> GcResult<Option<String>> {
    let columns = sql::rows(
        "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL)
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
        &[info.relid.into()],
        |row| {
            Ok((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
            ))
        },
    )?;
    let type_of = |name: &str| {
        columns
            .iter()
            .find(|(column, _)| column == name)
            .map(|(_, type_name)| type_name.as_str())
    };
    let Some(store) = STORES
        .iter()
        .find(|store| store.columns.iter().all(|c| type_of(c).is_some()))
    else {
        return Ok(None);
    };
    let naive = [ColumnKind::Timestamp, ColumnKind::Date]
        .iter()
        .any(|kind| type_of(store.columns[0]) == Some(kind.type_name()));
    let (zone, zone_note) = match (naive, store.time_column) {
        (false, _) | (true, TimeColumn::Epoch) => (String::new(), String::new()),
        (true, TimeColumn::LibraryWritesUtc) => (", time_zone => 'UTC'".into(), String::new()),
        // A psql variable: sent as written it is a syntax error, so the call is refused until
        // the zone is filled in.
        (true, TimeColumn::AppZone { where_to_read_it }) => (
            format!(", time_zone => {APP_ZONE_PLACEHOLDER}"),
            format!(
                " app_zone is the zone the app writes this naive column in: {where_to_read_it}. \
                 Read it there and set it (\\set app_zone ... in psql) or write it in; no zone \
                 is guessed here, since a wrong one deletes live sessions."
            ),
        ),
    };
    Ok(Some(format!(
        "This looks like the table of {}: SELECT session_gc.register({}, {}{zone}); {}{zone_note}",
        store.name,
        quote_literal(&info.display_name),
        store.arguments,
        store.note
    )))
}
