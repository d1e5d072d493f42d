//! A throwaway database on the shared Postgres.

use sqlx::{Connection, PgConnection};

/// The shared server's maintenance database; override with
/// `QAPMAP_TEST_POSTGRES_URL` (it must allow CREATE DATABASE).
pub fn admin_url() -> String {
    std::env::var("QAPMAP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is dropped (with FORCE) after it.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `qt_<run>_<label>_<random>` on the shared server.
    pub async fn create(label: &str) -> Self {
        Self::create_on(&admin_url(), label).await
    }

    /// Creates a database on the server `admin_url` points at.
    pub async fn create_on(admin_url: &str, label: &str) -> Self {
        let name = format!(
            "qt_{}_{}_{}",
            crate::run_id(),
            label,
            crate::unique_suffix()
        );
        let mut connection = PgConnection::connect(admin_url)
            .await
            .expect("connect to the Postgres admin database");
        // The name is ours: run id, label and hex only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .expect("create test database");
        let url = replace_database(admin_url, &name);
        Self {
            name,
            url,
            admin_url: admin_url.to_owned(),
        }
    }
}

impl TestDatabase {
    /// The same database for a second process of one test (two replicas);
    /// dropping the copy leaves the database to the owner.
    pub fn share(&self) -> Self {
        Self {
            name: String::new(),
            url: self.url.clone(),
            admin_url: String::new(),
        }
    }

    /// A value that names no database and drops nothing.
    pub(crate) fn placeholder() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            admin_url: String::new(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; use a thread of our own.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut connection) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut connection)
                    .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// `postgres://host/old` with its database replaced by `database`.
pub fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut replaced = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    replaced
}

#[cfg(test)]
mod tests {
    #[test]
    fn replace_database_keeps_host_and_query() {
        assert_eq!(
            super::replace_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            super::replace_database("postgres://h", "x"),
            "postgres://h/x"
        );
    }
}
