//! Databases for unit tests: an embedded SQLite file in a temporary directory, or a fresh
//! database on the PostgreSQL server named by `STRATUS_TEST_PG` (a base URL), dropped by
//! [`TestDb::drop`].

use crate::db::{Db, Location, Options};

pub(crate) struct TestDb {
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        TestDb {
            db,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A fresh PostgreSQL database, or None (after saying so) without `STRATUS_TEST_PG`.
    pub async fn postgres() -> Option<TestDb> {
        let Some(base) = std::env::var("STRATUS_TEST_PG")
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            eprintln!("skipped: STRATUS_TEST_PG is not set");
            return None;
        };
        let name = format!("stratus_u_{}", uuid::Uuid::new_v4().simple());
        let url = stratus_store::create_database(&base, &name).await.unwrap();
        let db = Db::open(Location::Url(&url), &Options::default())
            .await
            .unwrap();
        Some(TestDb {
            db,
            _dir: None,
            pg: Some((base, name)),
        })
    }

    /// Closes the database and drops it (PostgreSQL).
    pub async fn drop(self) {
        self.db.close().await;
        if let Some((base, name)) = &self.pg {
            let _ = stratus_store::drop_database(base, name).await;
        }
    }
}
