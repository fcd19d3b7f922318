//! What the PostgreSQL tests share: the throwaway cluster's URL (`HERALD_TEST_DATABASE_URL`, which
//! `scripts/test` sets), a connection with its driver task, and a small pool.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub fn admin_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL").expect(
        "HERALD_TEST_DATABASE_URL is not set: run scripts/test, which starts a throwaway PostgreSQL",
    )
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

pub fn pool(url: &str, size: usize) -> deadpool_postgres::Pool {
    let manager = deadpool_postgres::Manager::from_config(
        url.parse().unwrap(),
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap()
}
