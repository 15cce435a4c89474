//! Pins the root module's layout: what every released plugin `.so` was
//! built against. A change here is an interface change: append fields as
//! the compatibility rule says (a new minor) and re-bless the fixture with
//! `NODEINIT_BLESS=1 cargo test -p nodeinit-plugin-api --test root_layout`,
//! or it is a new major.

use std::path::Path;

use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;

/// Every type reachable from the root module, depth first, each once: its
/// full type, size and alignment, then its fields (name: type). Source lines
/// and module paths are left out, so moving code does not count as a change.
fn describe() -> String {
    let mut out = String::new();
    let mut seen = Vec::new();
    walk(
        <nodeinit_plugin_api::PluginRootRef as StableAbi>::LAYOUT,
        &mut seen,
        &mut out,
    );
    out
}

fn walk(layout: &'static TypeLayout, seen: &mut Vec<String>, out: &mut String) {
    let key = format!("{} ({})", layout.full_type(), layout.package());
    if seen.contains(&key) {
        return;
    }
    seen.push(key.clone());
    out.push_str(&format!(
        "{key} size={} align={}\n",
        layout.size(),
        layout.alignment()
    ));
    let fields = layout
        .get_fields()
        .map(|f| f.to_vec())
        .unwrap_or_default()
        .into_iter()
        .chain(layout.phantom_fields().to_vec());
    let mut children = Vec::new();
    for field in fields {
        out.push_str(&format!("  {}: {}\n", field.name(), field.full_type()));
        children.push(field.layout());
    }
    for child in children {
        walk(child, seen, out);
    }
}

#[test]
fn the_root_module_layout_is_the_released_one() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/root_layout.txt");
    let now = describe();
    if std::env::var_os("NODEINIT_BLESS").is_some() {
        std::fs::write(&fixture, &now).unwrap();
    }
    let pinned = std::fs::read_to_string(&fixture).unwrap();
    assert!(
        now == pinned,
        "the root module's layout changed (see {}); the compatibility rule in \
         plugin-api/src/abi/mod.rs says what may change. Now:\n{now}",
        fixture.display()
    );
}
