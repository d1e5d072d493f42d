//! A subject namespace of one test's own on the shared NATS server.

use qapmap_runtime::messaging::{self, Subjects};

/// The shared NATS; override with `QAPMAP_TEST_NATS_URL`.
pub fn shared_url() -> String {
    std::env::var("QAPMAP_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A unique namespace whose streams are deleted when the test ends.
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    pub url: String,
    /// Only the owner deletes the streams when dropped.
    owner: bool,
}

impl TestNamespace {
    pub fn new() -> Self {
        Self::on(&shared_url())
    }

    pub fn on(url: &str) -> Self {
        Self {
            name: format!("qt{}{}", crate::run_id(), crate::unique_suffix()),
            url: url.to_owned(),
            owner: true,
        }
    }

    /// The same namespace, for another service of one test system; dropping
    /// the copy leaves the streams to the owner.
    pub fn share(&self) -> Self {
        Self {
            name: self.name.clone(),
            url: self.url.clone(),
            owner: false,
        }
    }

    pub fn subjects(&self) -> Subjects {
        Subjects::new(self.name.clone())
    }
}

impl Default for TestNamespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let url = self.url.clone();
        let subjects = self.subjects();
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(client) = async_nats::connect(url).await {
                    let jetstream = async_nats::jetstream::new(client);
                    messaging::delete_streams(&jetstream, &subjects).await;
                }
            });
        });
        let _ = cleaner.join();
    }
}
