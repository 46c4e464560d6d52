//! Session stores of web frameworks, recognized by the shape of their table, so that a
//! `register()` without a rule can say the call that fits (README, "Frameworks", has each
//! recipe with its reasons). Only names and types are read; nothing here decides a purge.

use crate::error::GcResult;
use crate::policy::{ColumnKind, TableInfo};
use crate::sql;
use pgrx::spi::quote_literal;

/// How the store's time column holds time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TimeColumn {
    /// timestamptz; or a naive timestamp the store writes in UTC.
    UtcOrZoned,
    /// A naive timestamp the store writes in its connection's (or app's) local zone.
    LocalWallClock,
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

/// Most specific first: a table matching several stores gets the first.
const STORES: &[Store] = &[
    Store {
        name: "Django (django.contrib.sessions)",
        columns: &["expire_date", "session_key", "session_data"],
        time_column: TimeColumn::LocalWallClock,
        arguments: "expires_column => 'expire_date'",
        note: "Django writes expire_date in UTC with USE_TZ = True (timestamptz), in TIME_ZONE otherwise; drop the clearsessions cron job.",
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
        time_column: TimeColumn::UtcOrZoned,
        arguments: "idle_column => 'updated_at', idle_timeout => '30 days'",
        note: "As db:sessions:trim does (SESSION_DAYS_TRIM_THRESHOLD, 30 days); Rails writes UTC.",
    },
    Store {
        name: "connect-pg-simple (express-session)",
        columns: &["expire", "sid", "sess"],
        time_column: TimeColumn::LocalWallClock,
        arguments: "expires_column => 'expire'",
        note: "It writes expire in the app connection's TimeZone; set pruneSessionInterval: false.",
    },
    Store {
        name: "Flask-Session (SQLAlchemy)",
        columns: &["expiry", "session_id", "data"],
        time_column: TimeColumn::UtcOrZoned,
        arguments: "expires_column => 'expiry'",
        note: "Flask-Session writes expiry in UTC; set SESSION_CLEANUP_N_REQUESTS to None.",
    },
    Store {
        name: "Go scs postgresstore",
        columns: &["expiry", "token", "data"],
        time_column: TimeColumn::UtcOrZoned,
        arguments: "expires_column => 'expiry'",
        note: "Create the store with NewWithCleanupInterval(db, 0) to stop its cleanup goroutine.",
    },
    Store {
        name: "Auth.js / NextAuth (pg or Prisma adapter)",
        columns: &["expires", "sessionToken", "userId"],
        time_column: TimeColumn::UtcOrZoned,
        arguments: "expires_column => 'expires'",
        note: "Auth.js deletes an expired session only when it is presented; the Prisma adapter writes UTC.",
    },
    Store {
        name: "Auth.js / NextAuth verification tokens (pg or Prisma adapter)",
        columns: &["expires", "identifier", "token"],
        time_column: TimeColumn::UtcOrZoned,
        arguments: "expires_column => 'expires'",
        note: "Auth.js deletes a verification token only when it is used.",
    },
    Store {
        name: "Better Auth",
        columns: &["expiresAt", "token", "userId"],
        time_column: TimeColumn::UtcOrZoned,
        arguments: "expires_column => 'expiresAt'",
        note: "Better Auth deletes an expired session only when it is presented.",
    },
    Store {
        name: "Lucia-style user_session",
        columns: &["expires_at", "id", "user_id"],
        time_column: TimeColumn::UtcOrZoned,
        arguments: "expires_column => 'expires_at'",
        note: "Replaces a scheduled deleteExpiredSessions().",
    },
    Store {
        name: "Phoenix phx.gen.auth (users_tokens)",
        columns: &["inserted_at", "token", "context"],
        time_column: TimeColumn::UtcOrZoned,
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
    let zone = match (naive, store.time_column) {
        (false, _) | (true, TimeColumn::Epoch) => String::new(),
        (true, TimeColumn::UtcOrZoned) => ", time_zone => 'UTC'".into(),
        // The app's connections most likely run in the server's default zone.
        (true, TimeColumn::LocalWallClock) => {
            let default_zone = sql::one::<String>(
                "SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'TimeZone'",
                &[],
            )?
            .unwrap_or_else(|| "UTC".into());
            format!(
                ", time_zone => {} /* the zone the app writes in */",
                quote_literal(&default_zone)
            )
        }
    };
    Ok(Some(format!(
        "This looks like the table of {}: SELECT session_gc.register({}, {}{zone}); {}",
        store.name,
        quote_literal(&info.display_name),
        store.arguments,
        store.note
    )))
}
