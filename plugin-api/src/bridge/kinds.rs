//! Backend kinds as data. [`BackendKind`] names a kind at run time; each
//! [`Kind`] type carries, for one kind, its boxed ABI object, its host-side
//! adapter, its root-module constructor and its name, so that constructing
//! (plugin side, [`Provides`]), opening and adapting (host side) are written
//! once, generically.
//!
//! Adding a kind: one `BackendKind` variant, one `Kind` impl with its
//! `Provides` blanket impl here, and one root-module field (appended, as the
//! compatibility rule in [`crate::abi`] says).

use std::fmt;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr};
use hpc_node::CgroupManager;
use nodeinit_contracts::NamespaceFdProvider;

use super::from_abi::{CgroupAdapter, MountAdapter, NamespaceAdapter, ReadinessAdapter};
use super::to_abi::Guarded;
use crate::abi::{
    CgroupBox, HostServices, MountBox, NamespaceBox, PluginError, PluginRootRef, ReadinessBox,
};
use crate::ext::{AllocationMounts, ReadinessProvider};

/// The four backend kinds a plugin may provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// `hpc_node::CgroupManager`.
    Cgroup,
    /// `hpc_node::MountManager`.
    Mount,
    /// `hpc_node::NamespaceProvider`.
    Namespace,
    /// `hpc_node::ReadinessGate`.
    Readiness,
}

impl BackendKind {
    /// All kinds, in boot order.
    pub const ALL: [Self; 4] = [Self::Cgroup, Self::Mount, Self::Namespace, Self::Readiness];

    /// The config-table name (`"cgroup"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cgroup => "cgroup",
            Self::Mount => "mount",
            Self::Namespace => "namespace",
            Self::Readiness => "readiness",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A constructor as the root module holds it: `(host, options_json)`.
pub type Constructor<B> = extern "C" fn(HostServices, RStr<'_>) -> RResult<B, PluginError>;

/// One backend kind, as types.
pub trait Kind: 'static {
    /// Which kind.
    const KIND: BackendKind;
    /// Its backend object as it crosses the boundary.
    type Boxed;
    /// The host's `hpc_node`-trait view of a loaded one.
    type Adapter;
    /// The plugin's constructor of this kind, if it has one.
    fn constructor(root: &PluginRootRef) -> Option<Constructor<Self::Boxed>>;
    /// Wraps a constructed backend for the host; `label` names it in `Debug`.
    fn adapt(boxed: Self::Boxed, label: &str) -> Self::Adapter;
}

/// A Rust backend that can be exported as kind `K`: what the `hpc_node`
/// trait (plus the extension trait) of that kind gives, guarded.
pub trait Provides<K: Kind> {
    /// Boxes `self` as the ABI object, naming `plugin` in panic reports.
    fn into_boxed(self, plugin: &'static str) -> K::Boxed;
}

macro_rules! kind {
    ($marker:ident, $variant:ident, $boxed:ty, $adapter:ty, $field:ident, $bound:path) => {
        #[doc = concat!("The `", stringify!($field), "` backend kind.")]
        #[derive(Debug, Clone, Copy)]
        pub struct $marker;

        impl Kind for $marker {
            const KIND: BackendKind = BackendKind::$variant;
            type Boxed = $boxed;
            type Adapter = $adapter;
            fn constructor(root: &PluginRootRef) -> Option<Constructor<$boxed>> {
                root.$field()
            }
            fn adapt(boxed: $boxed, label: &str) -> $adapter {
                <$adapter>::new(boxed, label)
            }
        }

        impl<T: $bound + 'static> Provides<$marker> for T {
            fn into_boxed(self, plugin: &'static str) -> $boxed {
                <$boxed>::from_value(Guarded::new(self, plugin), TD_Opaque)
            }
        }
    };
}

kind!(
    Cgroup,
    Cgroup,
    CgroupBox,
    CgroupAdapter,
    cgroup,
    CgroupManager
);
kind!(
    Mount,
    Mount,
    MountBox,
    MountAdapter,
    mount,
    AllocationMounts
);
kind!(
    Namespace,
    Namespace,
    NamespaceBox,
    NamespaceAdapter,
    namespace,
    NamespaceFdProvider
);
kind!(
    Readiness,
    Readiness,
    ReadinessBox,
    ReadinessAdapter,
    readiness,
    ReadinessProvider
);

/// Whether `root` has a constructor of `kind`.
pub(crate) fn provides(root: &PluginRootRef, kind: BackendKind) -> bool {
    match kind {
        BackendKind::Cgroup => Cgroup::constructor(root).is_some(),
        BackendKind::Mount => Mount::constructor(root).is_some(),
        BackendKind::Namespace => Namespace::constructor(root).is_some(),
        BackendKind::Readiness => Readiness::constructor(root).is_some(),
    }
}
