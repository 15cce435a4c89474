//! The bridge between plain Rust backends and their ABI objects, both halves
//! side by side: [`to_abi`] (a plugin's `hpc_node` backend → ABI trait
//! object, [`to_abi::Guarded`]) and [`from_abi`] (an ABI object → the
//! host's `hpc_node`-trait adapter), plus [`kinds`] (each backend kind as
//! data) and [`shared_mounts`] (the host's mount backend, offered once to
//! namespace plugins).
//!
//! Depends only on [`crate::abi`] and the Rust traits; the plugin and host
//! sides build on it, never the reverse.

pub mod from_abi;
pub mod kinds;
pub(crate) mod shared_mounts;
pub mod to_abi;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::fd::OwnedFd;
    use std::sync::Mutex;

    use hpc_node::{
        NamespaceError, NamespaceProvider, NamespaceRequest, NamespaceResponse, NamespaceType,
    };

    use super::kinds::{Kind, Namespace, Provides};
    use crate::NamespaceFdProvider;

    /// Records who created what, as the unshare backend does.
    #[derive(Default)]
    struct Owners(Mutex<Vec<(String, u32)>>);

    impl NamespaceProvider for Owners {
        fn create_namespaces(
            &self,
            r: &NamespaceRequest,
        ) -> Result<NamespaceResponse, NamespaceError> {
            self.create_namespaces_owned(r, 0)
        }
        fn release_namespaces(&self, _: &str) -> Result<(), NamespaceError> {
            Ok(())
        }
    }

    impl NamespaceFdProvider for Owners {
        fn namespace_fds(&self, _: &str) -> Result<Vec<OwnedFd>, NamespaceError> {
            Ok(vec![])
        }
        fn create_namespaces_owned(
            &self,
            r: &NamespaceRequest,
            owner_uid: u32,
        ) -> Result<NamespaceResponse, NamespaceError> {
            self.0
                .lock()
                .unwrap()
                .push((r.allocation_id.clone(), owner_uid));
            Ok(NamespaceResponse {
                allocation_id: r.allocation_id.clone(),
                fd_types: r.namespaces.clone(),
                uenv_mount_path: None,
            })
        }
        fn allocation_owner(&self, id: &str) -> Option<u32> {
            let owners = self.0.lock().unwrap();
            owners.iter().find(|(a, _)| a == id).map(|(_, uid)| *uid)
        }
    }

    #[test]
    fn the_owner_crosses_the_boundary_both_ways() {
        // Guarded on the plugin side, adapted on the host side: the path a
        // loaded `.so` takes (interface 1.1).
        let boxed = <Owners as Provides<Namespace>>::into_boxed(Owners::default(), "owners");
        let adapter = Namespace::adapt(boxed, "owners");
        let request = NamespaceRequest {
            allocation_id: "job-1".into(),
            namespaces: vec![NamespaceType::Net],
            uenv_image: None,
        };
        let response = adapter.create_namespaces_owned(&request, 1234).unwrap();
        assert_eq!(response.fd_types, [NamespaceType::Net]);
        assert_eq!(adapter.allocation_owner("job-1"), Some(1234));
        assert_eq!(adapter.allocation_owner("job-2"), None);
    }
}
