//! A randomized differential test: random policies over every time rule, column type, epoch
//! unit and time zone (one with DST), with values exactly at, just around and far from the
//! cutoff, NULL and infinities; random batch sizes and ways of purging; and a concurrent session
//! extending and deleting random sessions during the purge. A trigger judges every row the
//! purge deletes as it deletes it.
//!
//! Invariants: no row deleted was live when its batch deleted it; every row expired when the
//! purge started and not extended since is gone; the count reported equals the rows removed.
//!
//! The seed is fixed (`SESSION_GC_FUZZ_SEED`, default 12); `SESSION_GC_FUZZ_ROUNDS` runs longer
//! (default 10 rounds).

use session_gc_integration::{count, scalar, shared_cluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A small deterministic generator (a 64-bit LCG), so a failing seed can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A column type and how a moment (`m`, timestamptz) becomes a value of it in zone `z`.
struct Column {
    sql_type: &'static str,
    epoch_unit: Option<&'static str>,
    naive: bool,
    /// Converts the timestamptz expression `m` to the column's type.
    from_moment: fn(&str, &str) -> String,
    /// Whether the column can hold ±infinity.
    infinite: bool,
}

const COLUMNS: &[Column] = &[
    Column {
        sql_type: "timestamptz",
        epoch_unit: None,
        naive: false,
        from_moment: |m, _| m.to_string(),
        infinite: true,
    },
    Column {
        sql_type: "timestamp",
        epoch_unit: None,
        naive: true,
        from_moment: |m, z| format!("({m}) AT TIME ZONE '{z}'"),
        infinite: true,
    },
    Column {
        sql_type: "date",
        epoch_unit: None,
        naive: true,
        from_moment: |m, z| format!("(({m}) AT TIME ZONE '{z}')::date"),
        infinite: true,
    },
    Column {
        sql_type: "bigint",
        epoch_unit: Some("s"),
        naive: false,
        from_moment: |m, _| format!("floor(extract(epoch FROM {m}))::int8"),
        infinite: false,
    },
    Column {
        sql_type: "integer",
        epoch_unit: Some("s"),
        naive: false,
        from_moment: |m, _| format!("floor(extract(epoch FROM {m}))::int4"),
        infinite: false,
    },
    Column {
        sql_type: "bigint",
        epoch_unit: Some("ms"),
        naive: false,
        from_moment: |m, _| format!("floor(extract(epoch FROM {m}) * 1000)::int8"),
        infinite: false,
    },
];

const ZONES: &[&str] = &["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"];
const MODES: &[&str] = &["background", "in_transaction", "procedure"];

#[test]
fn random_policies_never_delete_live_sessions_and_purge_all_expired_ones() {
    let seed: u64 = std::env::var("SESSION_GC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let rounds: u64 = std::env::var("SESSION_GC_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let cluster = shared_cluster();
    let name = cluster.fresh_db("d_fuzz");
    let mut c = cluster.connect(&name);
    let mut random = Random(seed);
    for round in 0..rounds {
        let column = random.pick(COLUMNS);
        let zone = *random.pick(ZONES);
        let mode = *random.pick(MODES);
        let (rule, lifetime) = match random.below(3) {
            0 => ("expires", None),
            1 => ("idle", Some(format!("{} minutes", 1 + random.below(2880)))),
            _ => ("aged", Some(format!("{} hours", 1 + random.below(72)))),
        };
        let grace = format!("{} seconds", random.below(600));
        let batch_size = 1 + random.below(200);
        let rows = 500 + random.below(2500);
        let what = format!(
            "seed {seed} round {round}: {} {} {zone} rule {rule} {lifetime:?} grace {grace} batch {batch_size} {mode}",
            column.sql_type,
            column.epoch_unit.unwrap_or("")
        );
        let offset = format!(
            "(interval '{}' + interval '{grace}')",
            lifetime.as_deref().unwrap_or("0")
        );
        // The table, its values around the cutoff, and the judge of every deletion.
        let value_at = |m: &str| (column.from_moment)(m, zone);
        let cutoff_value = value_at(&format!("now() - {offset}"));
        c.batch_execute(&format!(
            "DROP TABLE IF EXISTS fz, fz_deleted, fz_extended;
             CREATE TABLE fz (id int PRIMARY KEY, v {ty});
             CREATE INDEX ON fz (v);
             CREATE TABLE fz_deleted (id int, expired boolean);
             CREATE TABLE fz_extended (id int);
             SELECT setseed({fraction});
             INSERT INTO fz (id, v)
             SELECT g, CASE
                 WHEN r < 0.05 THEN NULL
                 WHEN r < 0.10 THEN {cutoff}
                 WHEN r < 0.15 THEN {plus_second}
                 WHEN r < 0.20 THEN {minus_second}
                 ELSE {spread} END
               FROM (SELECT g, random() AS r, random() AS s FROM generate_series(1, {rows}) g) x;
             {infinities}
             CREATE OR REPLACE FUNCTION fz_judge() RETURNS trigger LANGUAGE plpgsql AS $judge$
             BEGIN
                 -- The application's own deletes are not the purge's.
                 IF pg_catalog.current_setting('fz.app', true) IS DISTINCT FROM 'on' THEN
                     INSERT INTO public.fz_deleted
                     VALUES (OLD.id, coalesce(OLD.v < {cutoff}, false));
                 END IF;
                 RETURN OLD;
             END $judge$;
             CREATE TRIGGER fz_judge BEFORE DELETE ON fz FOR EACH ROW EXECUTE FUNCTION fz_judge();",
            ty = column.sql_type,
            fraction = (seed.wrapping_add(round) % 1000) as f64 / 1000.0,
            cutoff = cutoff_value,
            plus_second = value_at(&format!("now() - {offset} + interval '1 second'")),
            minus_second = value_at(&format!("now() - {offset} - interval '1 second'")),
            spread = value_at(&format!("now() - {offset} + (s - 0.5) * interval '6 days'")),
            infinities = if column.infinite {
                "INSERT INTO fz VALUES (-1, 'infinity'), (-2, '-infinity');"
            } else {
                ""
            },
        ))
        .unwrap_or_else(|e| panic!("{what}: setup: {e}"));
        let mut register = format!(
            "SELECT session_gc.register('fz', grace => '{grace}', batch_size => {batch_size}"
        );
        register.push_str(&match (rule, &lifetime) {
            ("idle", Some(l)) => format!(", idle_column => 'v', idle_timeout => '{l}'"),
            ("aged", Some(l)) => format!(", created_column => 'v', max_age => '{l}'"),
            _ => ", expires_column => 'v'".to_string(),
        });
        if let Some(unit) = column.epoch_unit {
            register.push_str(&format!(", epoch_unit => '{unit}'"));
        }
        if column.naive {
            register.push_str(&format!(", time_zone => '{zone}'"));
        }
        register.push(')');
        c.batch_execute(&register)
            .unwrap_or_else(|e| panic!("{what}: {register}: {e}"));
        // Expired when the purge starts, by the judge's reading.
        let expired_at_start: Vec<i32> = c
            .query(&format!("SELECT id FROM fz WHERE v < {cutoff_value}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();

        // A session extending random sessions (expired ones too), and now and then deleting one
        // (logging out), while the purge runs.
        let stop = Arc::new(AtomicBool::new(false));
        let extender = {
            let stop = stop.clone();
            let config = cluster.config(&name);
            let far = value_at("now() + interval '30 days'");
            let seed = random.next();
            std::thread::spawn(move || {
                let mut e = config.connect(postgres::NoTls).unwrap();
                e.batch_execute("SET fz.app = on").unwrap();
                let mut random = Random(seed);
                let mut touched = 0;
                while !stop.load(Ordering::Relaxed) && touched < 300 {
                    let id = 1 + random.below(rows) as i32;
                    let statement = if random.below(5) == 0 {
                        "DELETE FROM fz WHERE id = $1".to_string()
                    } else {
                        format!(
                            "WITH u AS (UPDATE fz SET v = {far} WHERE id = $1 RETURNING id)
                             INSERT INTO fz_extended SELECT id FROM u"
                        )
                    };
                    e.execute(&statement, &[&id]).unwrap();
                    touched += 1;
                }
            })
        };
        let reported: i64 = match mode {
            "procedure" => {
                c.batch_execute("CALL session_gc.purge('fz')").unwrap();
                scalar(
                    &mut c,
                    "SELECT deleted FROM session_gc.history ORDER BY id DESC LIMIT 1",
                )
            }
            "in_transaction" => scalar(
                &mut c,
                "SELECT deleted FROM session_gc.cleanup('fz', in_transaction => true)",
            ),
            _ => scalar(&mut c, "SELECT deleted FROM session_gc.cleanup('fz')"),
        };
        stop.store(true, Ordering::Relaxed);
        extender.join().unwrap();

        let live_deleted = count(&mut c, "fz_deleted WHERE NOT expired");
        assert_eq!(live_deleted, 0, "{what}: live sessions deleted");
        let removed = count(&mut c, "fz_deleted");
        assert_eq!(reported, removed, "{what}: reported vs removed");
        let left_behind: Vec<i32> = c
            .query(
                "SELECT id FROM fz WHERE id = ANY($1)
                   AND id NOT IN (SELECT id FROM fz_extended)",
                &[&expired_at_start],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            left_behind.is_empty(),
            "{what}: expired sessions left: {left_behind:?}"
        );
        c.batch_execute("SELECT session_gc.unregister('fz')")
            .unwrap();
    }
}
