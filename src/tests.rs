//! In-server unit tests (`cargo pgrx test`): the pieces below the SQL surface.
//! The SQL surface itself is tested from clients in `tests/`.
#[pgrx::pg_schema]
mod tests {
    use crate::error::GcError;
    use crate::identity;
    use crate::policy::{self, ColumnKind, RuleSpec};
    use crate::txn;
    use pgrx::prelude::*;
    use pgrx::{pg_sys, PgSqlErrorCode};

    fn table(sql: &str, name: &str) -> policy::TableInfo {
        Spi::run(sql).expect("create table");
        let relid = Spi::get_one::<pg_sys::Oid>(&format!("SELECT '{name}'::regclass::oid"))
            .expect("lookup")
            .expect("oid");
        policy::table_info(relid).expect("table info")
    }

    #[pg_test]
    fn cutoffs_are_computed_in_each_columns_own_type() {
        let info = table(
            "CREATE TABLE kinds (tz timestamptz, ts timestamp, d date, s int, ms bigint)",
            "kinds",
        );
        let cases = [
            ("tz", None, ColumnKind::Timestamptz),
            ("ts", None, ColumnKind::Timestamp),
            ("d", None, ColumnKind::Date),
            ("s", Some("s"), ColumnKind::EpochSeconds),
            ("ms", Some("ms"), ColumnKind::EpochMillis),
        ];
        for (column, unit, expected) in cases {
            let spec = RuleSpec {
                expires_column: Some(column.into()),
                grace: "1 hour".into(),
                epoch_unit: unit.map(str::to_string),
                ..RuleSpec::default()
            };
            let rules = policy::build_rules(&info, &spec).expect("rules");
            assert_eq!(rules[0].column_kind, expected);
            let cutoff = rules[0].cutoff().expect("cutoff");
            assert!(
                !matches!(cutoff, policy::Cutoff::None),
                "{column}: no cutoff"
            );
            // The cutoff parses as the column's type and lies an hour back.
            let sql = format!(
                "SELECT $1::{ty} < {now} AND $1::{ty} > {now} - {two_hours}",
                ty = expected.key_type(),
                now = match expected {
                    ColumnKind::EpochSeconds => "extract(epoch FROM now())::int8".to_string(),
                    ColumnKind::EpochMillis =>
                        "(extract(epoch FROM now()) * 1000)::int8".to_string(),
                    ColumnKind::Date => "(now() AT TIME ZONE 'UTC')::date + 1".to_string(),
                    ColumnKind::Timestamp => "(now() AT TIME ZONE 'UTC')".to_string(),
                    _ => "now()".to_string(),
                },
                two_hours = match expected {
                    ColumnKind::EpochSeconds => "7200",
                    ColumnKind::EpochMillis => "7200000",
                    ColumnKind::Date => "3",
                    _ => "interval '2 hours'",
                },
            );
            let ok = Spi::get_one_with_args::<bool>(&sql, &[cutoff.arg()]).expect("compare");
            assert_eq!(ok, Some(true), "{column}: cutoff {cutoff:?}");
        }
    }

    #[pg_test]
    fn predicates_compare_the_bare_column_so_indexes_serve_them() {
        let info = table(
            "CREATE TABLE p (\"Expires At\" timestamptz, on_ boolean)",
            "p",
        );
        let spec = RuleSpec {
            expires_column: Some("Expires At".into()),
            active_column: Some("on_".into()),
            grace: "0".into(),
            ..RuleSpec::default()
        };
        let rules = policy::build_rules(&info, &spec).expect("rules");
        assert_eq!(
            rules[0].predicate("t", 3),
            "t.\"Expires At\" < $3::pg_catalog.timestamptz"
        );
        assert_eq!(rules[1].predicate("t", 1), "t.on_ = false");
    }

    #[pg_test]
    fn a_row_filter_is_rendered_from_its_parsed_form_for_each_alias() {
        let info = table("CREATE TABLE f (context text, expires timestamptz)", "f");
        let spec = RuleSpec {
            expires_column: Some("expires".into()),
            grace: "0".into(),
            row_filter: Some("context = 'a') OR (context = 'b'".into()),
            ..RuleSpec::default()
        };
        let rules = policy::build_rules(&info, &spec).expect("rules");
        // One condition however the text was parenthesized, each column with the alias.
        assert_eq!(
            rules[0].predicate("t", 2),
            "((((t.context = 'a'::text) OR (t.context = 'b'::text))) AND t.expires < $2::pg_catalog.timestamptz)"
        );
        assert!(rules[0]
            .predicate("s", 1)
            .starts_with("((((s.context = 'a'::text)"));
    }

    #[pg_test]
    fn a_failed_subtransaction_rolls_back_and_the_caller_goes_on() {
        Spi::run("CREATE TABLE sub (x int)").expect("create");
        let failed = txn::in_subtransaction(|| {
            Spi::run("INSERT INTO sub VALUES (1)")?;
            Spi::run("SELECT 1 / 0")?;
            Ok(())
        });
        let error = failed.expect_err("division by zero");
        assert_eq!(error.code, PgSqlErrorCode::ERRCODE_DIVISION_BY_ZERO);
        let returned: Result<(), GcError> = txn::in_subtransaction(|| {
            Spi::run("INSERT INTO sub VALUES (2)")?;
            Err(GcError::invalid_parameter("returned, not raised"))
        });
        assert!(returned.is_err());
        txn::in_subtransaction(|| Ok(Spi::run("INSERT INTO sub VALUES (3)")?)).expect("insert");
        assert_eq!(
            Spi::get_one::<i64>("SELECT sum(x)::int8 FROM sub").expect("sum"),
            Some(3)
        );
    }

    #[pg_test]
    fn the_owner_identity_is_restored_after_an_error() {
        Spi::run("CREATE ROLE unit_owner").expect("role");
        let owner =
            Spi::get_one::<pg_sys::Oid>("SELECT oid FROM pg_roles WHERE rolname = 'unit_owner'")
                .expect("lookup")
                .expect("oid");
        let before = Spi::get_one::<String>("SELECT current_user::text").expect("user");
        let inside = txn::in_subtransaction(|| {
            identity::as_table_owner(owner, || {
                let who = Spi::get_one::<String>("SELECT current_user::text")?;
                let path = Spi::get_one::<String>("SELECT current_setting('search_path')")?;
                assert_eq!(who.as_deref(), Some("unit_owner"));
                assert_eq!(path.as_deref(), Some("pg_catalog, pg_temp"));
                // Security-restricted: no role switching from inside a purge.
                Spi::run("SET ROLE postgres")?;
                Ok(())
            })
        });
        assert!(inside.is_err());
        let after = Spi::get_one::<String>("SELECT current_user::text").expect("user");
        assert_eq!(before, after);
        let path = Spi::get_one::<String>("SELECT current_setting('search_path')").expect("path");
        assert_ne!(path.as_deref(), Some("pg_catalog, pg_temp"));
    }
}
