//! Items the `#[cacheable]` expansion calls. Not part of the public API: names and signatures
//! change without notice.
//!
//! The return kind of a cached function (`Result`, `Option`, anything else) is found by
//! method resolution on [`Probe`] ("autoref specialisation"), not by the spelling of the return
//! type, so `anyhow::Result<T>`, `io::Result<T>` and local aliases all count as `Result`.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::cache::{Cache, CacheValue, FillPolicy, First, Rest, Ttl};
use crate::error::CacheError;
use crate::front::{FrontKey, Text};
pub use crate::key::KeyText;
use crate::key::{ArgsHasher, push_u64, push_u128};
use crate::registry::with_installed;

pub use crate::observe::FnStats;
use crate::observe::short_key;
pub use crate::registry::installed;

/// What the macro knows about one cached function, as a `static`.
///
/// A `static` inside a generic function or a generic impl is one for all instantiations, and
/// the macro cannot see whether it is in an impl, so a function's identity is resolved at run
/// time from where it is ([`Site::scope_at`]).
#[derive(Debug)]
pub struct Site {
    /// `module_path!()` of the function.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// The scopes resolved so far.
    pub scopes: Scopes,
    /// The `prefix` option.
    pub prefix: &'static str,
    /// The `version` option.
    pub version: u32,
    /// The `ttl` option.
    pub ttl: SiteTtl,
    /// The `backend` option.
    pub backend: Option<&'static str>,
    /// The `protect` option (`None`: the configuration decides).
    pub protect: Option<bool>,
    /// The `early_refresh` option.
    pub early_refresh: Option<bool>,
    /// The `beta` option.
    pub beta: Option<f64>,
    /// The `stale_if_error` option, in ms.
    pub stale_if_error_ms: Option<u64>,
}

impl Site {
    /// The scope of this function as instantiated at `at`: the `type_name` of a closure
    /// written in the function's body, which the compiler prints as the path of the function
    /// with its Self type and trait (`app::Repo<app::Apples>::count::{{closure}}`,
    /// `<app::Page as app::Title>::text::{{closure}}`). The first few are found without a
    /// lock; each scope is built once and lives for the rest of the process.
    #[inline]
    pub fn scope_at(&'static self, at: &'static str) -> &'static Scope {
        for slot in &self.scopes.slots {
            match slot.get() {
                Some(r) if same_str(r.at, at) => return r.scope,
                Some(_) => {}
                None => break,
            }
        }
        self.resolve_scope(at)
    }

    #[cold]
    fn resolve_scope(&'static self, at: &'static str) -> &'static Scope {
        // Slots are only filled under this lock, so the search and the fill cannot race.
        let mut more = self.scopes.more.lock();
        let slots = || self.scopes.slots.iter().filter_map(|s| s.get());
        // Past the slots this runs on every call: no allocation before the first resolution.
        if let Some(r) = slots().chain(more.iter()).find(|r| same_str(r.at, at)) {
            return r.scope;
        }
        // Instantiations of a generic free function share one scope.
        let name = scope_name(self.module, at, self.name);
        let existing = slots()
            .chain(more.iter())
            .find(|r| r.scope.name == name)
            .map(|r| r.scope);
        let scope = match existing {
            Some(scope) => scope,
            None => Box::leak(Box::new(Scope {
                name: Box::leak(name.into_boxed_str()),
                stats: FnStats::new(),
                route: AtomicU64::new(0),
            })),
        };
        let resolved = Resolved { at, scope };
        match self.scopes.slots.iter().find(|s| s.get().is_none()) {
            Some(slot) => {
                let _ = slot.set(resolved);
            }
            None => more.push(resolved),
        }
        scope
    }
}

#[inline]
fn same_str(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// The scope name for the function `name` of module `module` found at `at` (see
/// [`Site::scope_at`]): `{module}::{name}` for a free function, `{module}::{owner}::{name}`
/// for a function of an impl, the owner being the Self type or `<Type as Trait>` with
/// `{module}::` left out of it (`app::repo::Repo<Apples>::count`), or the owner's own path when
/// it is a type of another module (`app::models::User::name`).
fn scope_name(module: &str, at: &str, name: &str) -> String {
    // Closures and async blocks print as `{{closure}}` (other compilers may write
    // `{closure#0}`): drop them, so that `path` ends with the enclosing function, the cached
    // function or one of its companions.
    let mut path = at;
    while let Some(parent) = top_level_parent(path)
        && path[parent.len()..].starts_with("::{")
    {
        path = parent;
    }
    let owner = top_level_parent(path).unwrap_or("");
    if owner.is_empty() || owner == module {
        return format!("{module}::{name}");
    }
    let owner_in_module = owner
        .strip_prefix(module)
        .and_then(|rest| rest.strip_prefix("::"));
    match owner_in_module {
        Some(rest) => format!("{module}::{}::{name}", strip_module(rest, module)),
        None if owner.starts_with('<') => {
            format!("{module}::{}::{name}", strip_module(owner, module))
        }
        None => format!("{}::{name}", strip_module(owner, module)),
    }
}

/// `path` without its last `::` segment, looking only at `::` outside `<...>`.
fn top_level_parent(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    let mut depth = 0usize;
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            // `->` of a fn pointer type is not a closing bracket.
            b'>' if i == 0 || bytes[i - 1] != b'-' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                last = Some(i);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    last.map(|i| &path[..i])
}

/// `ty` with `{module}::` removed wherever it starts a path.
fn strip_module(ty: &str, module: &str) -> String {
    let strip = format!("{module}::");
    let mut out = String::with_capacity(ty.len());
    let mut rest = ty;
    let mut at_boundary = true;
    while !rest.is_empty() {
        if at_boundary && let Some(after) = rest.strip_prefix(strip.as_str()) {
            rest = after;
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        out.push(c);
        at_boundary = !(c.is_alphanumeric() || c == '_' || c == ':');
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// One cached function's identity: the name its automatic keys, its
/// [`function_stats`](crate::function_stats) entry and its `cache.functions` override use, and
/// its counters.
#[derive(Debug)]
pub struct Scope {
    /// `module_path::fn_name`, or `module_path::SelfType::method` for a method.
    pub name: &'static str,
    /// The counters.
    stats: FnStats,
    /// Which cache of the installed registry its hits read, found once per registry:
    /// `generation << ROUTE_BITS | slot`, the slot being the cache's index + 1 or
    /// [`ROUTE_OFF`]; `0` before the first call.
    route: AtomicU64,
}

const ROUTE_BITS: u32 = 16;
const ROUTE_OFF: u64 = (1 << ROUTE_BITS) - 1;

impl Scope {
    #[inline]
    fn function(&'static self) -> Option<(&'static str, &'static FnStats)> {
        Some((self.name, &self.stats))
    }

    /// The index of the cache its hits read in the registry of `generation` (`None`: switched
    /// off by configuration), routed on the first call after that registry was installed.
    #[inline]
    fn routed(&self, caches: &crate::Caches, generation: u64, site: &Site) -> Option<usize> {
        let known = self.route.load(Ordering::Relaxed);
        if generation != 0 && known >> ROUTE_BITS == generation {
            return match known & ROUTE_OFF {
                ROUTE_OFF => None,
                slot => Some(slot as usize - 1),
            };
        }
        self.reroute(caches, generation, site)
    }

    #[cold]
    fn reroute(&self, caches: &crate::Caches, generation: u64, site: &Site) -> Option<usize> {
        let index = match route(caches, site, self) {
            Ok(Some((index, _))) => Some(index),
            // An unknown cache name is reported by the miss path, which runs next.
            Ok(None) | Err(_) => None,
        };
        let slot = index.map_or(ROUTE_OFF, |i| (i as u64 + 1).min(ROUTE_OFF - 1));
        if generation != 0 && generation < 1 << (64 - ROUTE_BITS) && slot != ROUTE_OFF - 1 {
            self.route
                .store(generation << ROUTE_BITS | slot, Ordering::Relaxed);
        }
        index
    }
}

#[derive(Debug, Clone, Copy)]
struct Resolved {
    at: &'static str,
    scope: &'static Scope,
}

/// The scopes a function has resolved so far, one per place it is instantiated at.
#[derive(Debug)]
pub struct Scopes {
    /// Read without a lock; almost every function has one.
    slots: [std::sync::OnceLock<Resolved>; 8],
    /// Instantiations past the slots.
    more: parking_lot::Mutex<Vec<Resolved>>,
}

impl Scopes {
    /// None resolved yet.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Scopes {
        Scopes {
            slots: [const { std::sync::OnceLock::new() }; 8],
            more: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

/// The `ttl` option.
#[derive(Debug, Clone, Copy)]
pub enum SiteTtl {
    /// Not given: the backend's default.
    Default,
    /// Milliseconds.
    Millis(u64),
    /// `"never"`.
    Never,
}

impl SiteTtl {
    fn ttl(self) -> Ttl {
        match self {
            SiteTtl::Default => Ttl::Default,
            SiteTtl::Millis(ms) => Ttl::After(Duration::from_millis(ms)),
            SiteTtl::Never => Ttl::Never,
        }
    }
}

/// Where the cache comes from.
pub enum Source<'c> {
    /// `cache = expr`, borrowed for the call: no reference count is touched on a hit.
    Given(&'c Cache),
    /// `cache = expr`, held by a call that outlives the borrow (a miss, a request scope).
    Owned(Cache),
    /// `backend = "name"` or nothing: the installed registry.
    Registry,
}

impl Source<'_> {
    /// The source with a handle of its own.
    pub fn owned(self) -> Source<'static> {
        match self {
            Source::Given(c) => Source::Owned(c.clone()),
            Source::Owned(c) => Source::Owned(c),
            Source::Registry => Source::Registry,
        }
    }

    #[inline]
    fn memory_hit<T: CacheValue, K: FrontKey>(
        &self,
        site: &'static Site,
        scope: &'static Scope,
        key: &mut K,
    ) -> Option<T> {
        match self {
            Source::Given(c) => c.memory_hit(key, scope.function()),
            Source::Owned(c) => c.memory_hit(key, scope.function()),
            Source::Registry => with_installed(|caches, generation| {
                let index = scope.routed(caches, generation, site)?;
                caches.at(index)?.memory_hit(key, scope.function())
            }),
        }
    }

    /// The cache and ttl to use; `Ok(None)` when configuration switched this function off.
    fn resolve(&self, site: &Site, scope: &Scope) -> Result<Option<(Cache, Ttl)>, CacheError> {
        match self {
            Source::Given(c) => Ok(Some(((*c).clone(), site.ttl.ttl()))),
            Source::Owned(c) => Ok(Some((c.clone(), site.ttl.ttl()))),
            Source::Registry => with_installed(|caches, _| {
                route(caches, site, scope)
                    .map(|r| r.and_then(|(index, ttl)| caches.at(index).map(|c| (c.clone(), ttl))))
            }),
        }
    }
}

/// Where the registry's cache for this site is, and its ttl, after the per-function overrides
/// of `cache.functions` (looked up only when there are any). `Ok(None)`: switched off.
fn route(
    caches: &crate::Caches,
    site: &Site,
    scope: &Scope,
) -> Result<Option<(usize, Ttl)>, CacheError> {
    let functions = &caches.config().functions;
    let over = if functions.is_empty() {
        None
    } else {
        functions.get(scope.name)
    };
    if over.and_then(|o| o.enabled) == Some(false) {
        return Ok(None);
    }
    let backend = over.and_then(|o| o.backend.as_deref()).or(site.backend);
    let cache = match backend {
        None => caches.default_index(),
        Some(name) => caches
            .index_of(name)
            .ok_or_else(|| CacheError::UnknownCache(name.to_owned()))?,
    };
    let ttl = match over.and_then(|o| o.ttl) {
        Some(Some(d)) => Ttl::After(d),
        Some(None) => Ttl::Never,
        None => site.ttl.ttl(),
    };
    Ok(Some((cache, ttl)))
}

/// What `cache = expr` may be.
#[diagnostic::on_unimplemented(
    message = "`cache = ...` must be a `lexigram_cache::Cache` or a reference to one, not `{Self}`",
    label = "not a Cache"
)]
pub trait AsCache {
    /// The cache.
    fn as_cache(&self) -> &Cache;
}

impl AsCache for Cache {
    fn as_cache(&self) -> &Cache {
        self
    }
}

impl AsCache for std::sync::Arc<Cache> {
    fn as_cache(&self) -> &Cache {
        self
    }
}

impl<C: AsCache + ?Sized> AsCache for &C {
    fn as_cache(&self) -> &Cache {
        (**self).as_cache()
    }
}

/// Turns `cache = expr` into a [`Source`].
#[inline]
pub fn given<C: AsCache + ?Sized>(c: &C) -> Source<'_> {
    Source::Given(c.as_cache())
}

/// Splits a function's output into the part that is cached and the part that is passed
/// through, and rebuilds the output from a cached value.
///
/// No `'static` bound on the trait or on a passed-through error type: with one, rustc cannot
/// show the wrapper's future `Send` for an error such as `Box<dyn Error + Send + Sync>`
/// ("implementation of `Send` is not general enough").
pub trait Adapter: Copy + Send + Sync {
    /// The function's return type.
    type Output;
    /// What is stored.
    type Value: CacheValue;
    /// `Ok(value)` to store, `Err(output)` to return without storing.
    fn split(self, out: Self::Output) -> Result<Self::Value, Self::Output>;
    /// The output for a cached value.
    fn join(self, value: Self::Value) -> Self::Output;
    /// The output for a cache error when `skip_on_error = false`; `None` to ignore it.
    fn fail(self, _e: CacheError) -> Option<Self::Output> {
        None
    }
    /// The tags a stored value carries (`tags = [...]`); `None` for an untagged function.
    fn tags(&self) -> Option<&[String]> {
        None
    }
}

/// An adapter whose stored values carry `tags`: the expansion of `tags = [...]`, which wraps
/// the function's adapter so that the wrapper needs no parameter of its own for them.
#[derive(Clone, Copy)]
pub struct Tagged<'a, A> {
    adapter: A,
    tags: &'a [String],
}

/// `adapter`, its stored values carrying `tags`.
pub fn tagged<A: Adapter>(adapter: A, tags: &[String]) -> Tagged<'_, A> {
    Tagged { adapter, tags }
}

impl<A: Adapter> Adapter for Tagged<'_, A> {
    type Output = A::Output;
    type Value = A::Value;
    fn split(self, out: A::Output) -> Result<A::Value, A::Output> {
        self.adapter.split(out)
    }
    fn join(self, value: A::Value) -> A::Output {
        self.adapter.join(value)
    }
    fn fail(self, e: CacheError) -> Option<A::Output> {
        self.adapter.fail(e)
    }
    fn tags(&self) -> Option<&[String]> {
        Some(self.tags)
    }
}

/// Starts a tag template (`tags = ["user:{id}"]`): tags take no prefix.
#[inline]
pub fn template_tag() -> KeyText {
    KeyText::new()
}

macro_rules! adapter {
    ($(#[$m:meta])* $name:ident < $($g:ident),* >) => {
        $(#[$m])*
        pub struct $name<$($g),*>(PhantomData<fn() -> ($($g,)*)>);
        impl<$($g),*> Clone for $name<$($g),*> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($g),*> Copy for $name<$($g),*> {}
    };
}

adapter!(
    /// `Result<T, E>`: caches `Ok`.
    OkOnly<T, E>
);
adapter!(
    /// `Result<T, E>` with `cache_err`: caches the whole result.
    WholeResult<T, E>
);
adapter!(
    /// `Result<T, E>` with `skip_on_error = false`: caches `Ok`, converts cache errors into `E`.
    OkOrFail<T, E>
);
adapter!(
    /// `Option<T>`: caches `Some`.
    SomeOnly<T>
);
adapter!(
    /// Anything else, or `Option<T>` with `cache_none`: caches the value.
    Whole<T>
);

impl<T: CacheValue, E> Adapter for OkOnly<T, E> {
    type Output = Result<T, E>;
    type Value = T;
    fn split(self, out: Result<T, E>) -> Result<T, Result<T, E>> {
        out.map_err(Err)
    }
    fn join(self, value: T) -> Result<T, E> {
        Ok(value)
    }
}

impl<T: CacheValue, E: From<CacheError>> Adapter for OkOrFail<T, E> {
    type Output = Result<T, E>;
    type Value = T;
    fn split(self, out: Result<T, E>) -> Result<T, Result<T, E>> {
        OkOnly(PhantomData).split(out)
    }
    fn join(self, value: T) -> Result<T, E> {
        OkOnly(PhantomData).join(value)
    }
    fn fail(self, e: CacheError) -> Option<Result<T, E>> {
        Some(Err(E::from(e)))
    }
}

impl<T: CacheValue, E: CacheValue> Adapter for WholeResult<T, E> {
    type Output = Result<T, E>;
    type Value = Result<T, E>;
    fn split(self, out: Result<T, E>) -> Result<Result<T, E>, Result<T, E>> {
        Ok(out)
    }
    fn join(self, value: Result<T, E>) -> Result<T, E> {
        value
    }
}

impl<T: CacheValue> Adapter for SomeOnly<T> {
    type Output = Option<T>;
    type Value = T;
    fn split(self, out: Option<T>) -> Result<T, Option<T>> {
        out.ok_or(None)
    }
    fn join(self, value: T) -> Option<T> {
        Some(value)
    }
}

impl<T: CacheValue> Adapter for Whole<T> {
    type Output = T;
    type Value = T;
    fn split(self, out: T) -> Result<T, T> {
        Ok(out)
    }
    fn join(self, value: T) -> T {
        value
    }
}

/// The probe the expansion calls `__lex_adapter*` on, as `(&&&Probe::<R>::new())`: method
/// resolution tries `&&Probe` (Result) first, then `&Probe` (Option), then `Probe` (anything).
pub struct Probe<R>(PhantomData<fn() -> R>);

impl<R> Probe<R> {
    /// A probe for return type `R`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

/// Chosen for `Result<T, E>` (first in method resolution).
pub trait ProbeResult {
    /// The default adapter.
    type Plain;
    /// `cache_err`.
    type Whole;
    /// `skip_on_error = false`.
    type Strict;
    /// The adapter without options.
    fn __lex_adapter(&self) -> Self::Plain;
    /// The adapter with `cache_err`.
    fn __lex_adapter_whole(&self) -> Self::Whole;
    /// The adapter with `skip_on_error = false`.
    fn __lex_adapter_strict(&self) -> Self::Strict;
}

impl<T, E> ProbeResult for &&Probe<Result<T, E>> {
    type Plain = OkOnly<T, E>;
    type Whole = WholeResult<T, E>;
    type Strict = OkOrFail<T, E>;
    fn __lex_adapter(&self) -> OkOnly<T, E> {
        OkOnly(PhantomData)
    }
    fn __lex_adapter_whole(&self) -> WholeResult<T, E> {
        WholeResult(PhantomData)
    }
    fn __lex_adapter_strict(&self) -> OkOrFail<T, E> {
        OkOrFail(PhantomData)
    }
}

/// Chosen for `Option<T>`.
pub trait ProbeOption {
    /// The default adapter.
    type Plain;
    /// `cache_none`.
    type Whole;
    /// The adapter without options.
    fn __lex_adapter(&self) -> Self::Plain;
    /// The adapter with `cache_none`.
    fn __lex_adapter_whole(&self) -> Self::Whole;
    /// Never valid here: `assert_result` reports the misuse; this only keeps the error single.
    fn __lex_adapter_strict(&self) -> Self::Plain;
}

impl<T> ProbeOption for &Probe<Option<T>> {
    type Plain = SomeOnly<T>;
    type Whole = Whole<Option<T>>;
    fn __lex_adapter(&self) -> SomeOnly<T> {
        SomeOnly(PhantomData)
    }
    fn __lex_adapter_whole(&self) -> Whole<Option<T>> {
        Whole(PhantomData)
    }
    fn __lex_adapter_strict(&self) -> SomeOnly<T> {
        SomeOnly(PhantomData)
    }
}

/// Chosen for any other type.
pub trait ProbePlain {
    /// The adapter.
    type Plain;
    /// The adapter.
    fn __lex_adapter(&self) -> Self::Plain;
    /// Never valid here: `assert_option` reports the misuse; this only keeps the error single.
    fn __lex_adapter_whole(&self) -> Self::Plain;
    /// Never valid here: `assert_result` reports the misuse; this only keeps the error single.
    fn __lex_adapter_strict(&self) -> Self::Plain;
}

impl<R> ProbePlain for Probe<R> {
    type Plain = Whole<R>;
    fn __lex_adapter(&self) -> Whole<R> {
        Whole(PhantomData)
    }
    fn __lex_adapter_whole(&self) -> Whole<R> {
        Whole(PhantomData)
    }
    fn __lex_adapter_strict(&self) -> Whole<R> {
        Whole(PhantomData)
    }
}

/// Compile-time check behind `cache_none`.
#[diagnostic::on_unimplemented(
    message = "`cache_none` needs a function that returns `Option<T>`, not `{Self}`",
    label = "this return type is not an Option",
    note = "remove `cache_none`: it only applies to Option returns"
)]
pub trait IsOption {}
impl<T> IsOption for Option<T> {}

/// Compile-time check behind `cache_err` and `skip_on_error = false`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Result, so the option has no error to act on",
    label = "this return type is not a Result",
    note = "`cache_err` and `skip_on_error = false` only apply to functions returning Result<T, E>"
)]
pub trait IsResult {}
impl<T, E> IsResult for Result<T, E> {}

/// Asserts `R: IsOption` at compile time.
pub const fn assert_option<R: IsOption>() {}
/// Asserts `R: IsResult` at compile time.
pub const fn assert_result<R: IsResult>() {}

/// A parameter that goes into an automatic key.
#[diagnostic::on_unimplemented(
    message = "this parameter cannot be part of an automatic cache key: `{Self}` does not implement serde::Serialize",
    label = "not Serialize",
    note = "leave the parameter out of the key with `skip(name)`, or write the key yourself with `key = \"...\"`"
)]
pub trait KeyArg {
    /// Feeds the argument into the hasher.
    fn feed(&self, h: &mut ArgsHasher) -> bool;
}

impl<T: Serialize + ?Sized> KeyArg for T {
    #[inline]
    fn feed(&self, h: &mut ArgsHasher) -> bool {
        h.arg(self).is_ok()
    }
}

/// Starts an automatic key.
pub fn hasher() -> ArgsHasher {
    ArgsHasher::new()
}

/// Adds a parameter to an automatic key; `ok` turns false if its Serialize impl fails.
#[inline]
pub fn feed<T: KeyArg + ?Sized>(h: &mut ArgsHasher, ok: &mut bool, value: &T) {
    *ok &= value.feed(h);
}

/// Writes an automatic key, `{prefix}{scope}:v{version}:{hash}`, into `out`. Without a hash (an
/// argument failed to serialize) it writes nothing and returns `false`: the call runs uncached.
#[inline]
pub fn auto_key(site: &Site, scope: &Scope, h: &ArgsHasher, ok: bool, out: &mut KeyText) -> bool {
    if !ok {
        tracing::warn!(
            function = scope.name,
            "an argument failed to serialize; running without the cache"
        );
        return false;
    }
    crate::key::write_auto_key(out, site.prefix, scope.name, site.version, h.finish());
    true
}

/// Starts a template key with the site's prefix.
#[inline]
pub fn template_key(site: &Site, out: &mut KeyText) {
    // Most sites have no prefix: no copy then.
    if !site.prefix.is_empty() {
        out.push_str(site.prefix);
    }
}

/// The key as a `String` for a call that stores it; `None` when there is no key.
#[inline]
pub fn owned_key(key: &KeyText, keyed: bool) -> Option<String> {
    keyed.then(|| key.as_str().to_owned())
}

/// A value named in a key template.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be written into a key template: it does not implement Display",
    label = "not Display",
    note = "name a field that is Display (`{{user.id}}`), or leave `key` out for an automatic key, which hashes any Serialize argument"
)]
pub trait KeyPart {
    /// Appends the value.
    fn push_to(&self, key: &mut KeyText);
}

impl<T: std::fmt::Display + ?Sized> KeyPart for T {
    #[inline]
    fn push_to(&self, key: &mut KeyText) {
        use std::fmt::Write as _;
        let _ = write!(key, "{self}");
    }
}

/// A template value on its way into a key. [`part`] checks that it can be written at all (its
/// error is the one a user sees); the macro then calls `push_part` through a reference, so
/// method resolution takes [`PushFast`] for integers and strings, which write their text
/// without the formatting machinery, and [`PushAny`] (`Display`) for everything else. Both
/// write the same text `Display` writes.
pub struct Part<'a, T: ?Sized> {
    value: &'a T,
    push: fn(&T, &mut KeyText),
}

/// Wraps a template value; see [`Part`].
#[inline]
pub fn part<T: KeyPart + ?Sized>(value: &T) -> Part<'_, T> {
    Part {
        value,
        push: T::push_to,
    }
}

/// Values whose text is written without `core::fmt`.
pub trait FastPart {
    /// Appends the value's `Display` text.
    fn push_fast(&self, key: &mut KeyText);
}

/// The fast path of [`Part`].
pub trait PushFast {
    /// Appends the value.
    fn push_part(&self, key: &mut KeyText);
}

/// The `Display` path of [`Part`].
pub trait PushAny {
    /// Appends the value.
    fn push_part(&self, key: &mut KeyText);
}

impl<T: FastPart + ?Sized> PushFast for Part<'_, T> {
    #[inline]
    fn push_part(&self, key: &mut KeyText) {
        self.value.push_fast(key);
    }
}

impl<T: ?Sized> PushAny for &Part<'_, T> {
    #[inline]
    fn push_part(&self, key: &mut KeyText) {
        (self.push)(self.value, key);
    }
}

impl<T: FastPart + ?Sized> FastPart for &T {
    #[inline]
    fn push_fast(&self, key: &mut KeyText) {
        (**self).push_fast(key);
    }
}

impl FastPart for str {
    #[inline]
    fn push_fast(&self, key: &mut KeyText) {
        key.push_str(self);
    }
}

impl FastPart for String {
    #[inline]
    fn push_fast(&self, key: &mut KeyText) {
        key.push_str(self);
    }
}

macro_rules! fast_integers {
    ($($t:ty => $push:ident as $wide:ty),* $(,)?) => {$(
        impl FastPart for $t {
            #[inline]
            fn push_fast(&self, key: &mut KeyText) {
                #[allow(unused_comparisons)]
                let negative = *self < 0;
                $push(key, negative, (*self as $wide).unsigned_abs() as _);
            }
        }
    )*};
}
fast_integers!(
    u8 => push_u64 as i64, u16 => push_u64 as i64, u32 => push_u64 as i64,
    i8 => push_u64 as i64, i16 => push_u64 as i64, i32 => push_u64 as i64,
    i64 => push_u64 as i64, isize => push_u64 as i64, i128 => push_u128 as i128,
);

impl FastPart for u64 {
    #[inline]
    fn push_fast(&self, key: &mut KeyText) {
        push_u64(key, false, *self);
    }
}

impl FastPart for usize {
    #[inline]
    fn push_fast(&self, key: &mut KeyText) {
        push_u64(key, false, *self as u64);
    }
}

impl FastPart for u128 {
    #[inline]
    fn push_fast(&self, key: &mut KeyText) {
        push_u128(key, false, *self);
    }
}

/// The synchronous hit path of a cached function, before its body's future is built:
/// `Ok(output)` for a value in memory (or in a near tier), from a key that was never copied to
/// the heap; otherwise `Err` with the source, now holding its own handle, for [`fill`].
#[inline]
pub fn hit<A: Adapter>(
    site: &'static Site,
    scope: &'static Scope,
    source: Source<'_>,
    key: Option<&KeyText>,
    adapter: A,
) -> Result<A::Output, Source<'static>> {
    hit_by(site, scope, source, key.map(Written), adapter)
}

/// [`hit`] of a key however the thread fronts name it.
#[inline]
fn hit_by<A: Adapter, K: FrontKey>(
    site: &'static Site,
    scope: &'static Scope,
    source: Source<'_>,
    key: Option<K>,
    adapter: A,
) -> Result<A::Output, Source<'static>> {
    if let Some(mut key) = key
        && let Some(v) = source.memory_hit::<A::Value, _>(site, scope, &mut key)
    {
        tracing::trace!(
            function = scope.name,
            key = short_key(key.text()),
            outcome = "hit"
        );
        return Ok(adapter.join(v));
    }
    Err(source.owned())
}

/// A key written in full, named in the thread fronts by its bytes: a hit never checks that
/// they are UTF-8, only a read of the store needs the text.
struct Written<'a>(&'a KeyText);

impl FrontKey for Written<'_> {
    #[inline]
    fn ident(&self) -> (usize, &[u8]) {
        (0, self.0.as_bytes())
    }
    #[inline]
    fn text(&mut self) -> &str {
        self.0.as_str()
    }
}

/// An automatic key as the thread fronts name it: its function's scope and its encoded
/// arguments, which fix its text; the text is written only when a read needs it.
struct AutoKey<'a> {
    site: &'static Site,
    scope: &'static Scope,
    args: &'a [u8],
    h: &'a ArgsHasher,
    out: &'a mut KeyText,
}

impl FrontKey for AutoKey<'_> {
    #[inline]
    fn ident(&self) -> (usize, &[u8]) {
        // A scope belongs to one site and lives for the rest of the process, and the site
        // fixes the prefix and version: its address and the arguments name the key.
        (std::ptr::from_ref(self.scope) as usize, self.args)
    }

    fn text(&mut self) -> &str {
        // An automatic key is never empty, so an empty buffer is one not written yet.
        if self.out.as_str().is_empty() {
            let (site, scope) = (self.site, self.scope);
            crate::key::write_auto_key(
                self.out,
                site.prefix,
                scope.name,
                site.version,
                self.h.finish(),
            );
        }
        self.out.as_str()
    }
}

/// [`hit`] for an automatic key: a value kept by the thread front is found from the encoded
/// arguments alone, without hashing them or writing the key. Whenever it returns `Err`, the
/// key is written into `out` (nothing when an argument failed to serialize: `ok` is false).
#[inline]
pub fn hit_auto<A: Adapter>(
    site: &'static Site,
    scope: &'static Scope,
    source: Source<'_>,
    h: &ArgsHasher,
    ok: bool,
    out: &mut KeyText,
    adapter: A,
) -> Result<A::Output, Source<'static>> {
    if ok && let Some(args) = h.gathered() {
        let mut key = AutoKey {
            site,
            scope,
            args,
            h,
            out,
        };
        if let Some(v) = source.memory_hit::<A::Value, _>(site, scope, &mut key) {
            tracing::trace!(
                function = scope.name,
                key = short_key(key.text()),
                outcome = "hit"
            );
            return Ok(adapter.join(v));
        }
        key.text();
        return Err(source.owned());
    }
    let keyed = auto_key(site, scope, h, ok, out);
    hit(site, scope, source, keyed.then_some(&*out), adapter)
}

/// A call [`hit`] could not answer: the remote read, then past a hit the rest of the fill,
/// boxed, so that the future of every call stays as small as a hit needs.
pub async fn fill<A, F>(
    site: &'static Site,
    scope: &'static Scope,
    source: Source<'static>,
    key: Option<String>,
    adapter: A,
    body: F,
) -> A::Output
where
    A: Adapter,
    F: Future<Output = A::Output>,
{
    let Some(key) = key else {
        return body.await;
    };
    let route = match source.resolve(site, scope) {
        Ok(route) => route,
        Err(e) => {
            tracing::warn!(function = scope.name, error = %e, "running without the cache");
            if let Some(out) = adapter.fail(e) {
                return out;
            }
            None
        }
    };
    // `body.await` outside any `match`: a scrutinee alive across it would be part of the
    // future, and an output such as `Result<T, Box<dyn Error>>` would make it `!Send`.
    let Some((cache, ttl)) = route else {
        return body.await;
    };
    let policy = policy(site, scope, &cache, adapter);
    let rest = match cache
        .fill_first::<A::Value>(&key, site.version, &policy)
        .await
    {
        First::Hit(v) => {
            tracing::debug!(
                function = scope.name,
                cache = cache.name(),
                key = short_key(&key),
                outcome = "value"
            );
            return adapter.join(v);
        }
        First::Rest(rest) => rest,
    };
    let call = Call {
        scope,
        cache,
        ttl,
        version: site.version,
        policy,
        key,
    };
    Box::pin(miss(call, rest, adapter, body)).await
}

/// [`hit`], then [`fill`].
pub async fn run<A, F>(
    site: &'static Site,
    scope: &'static Scope,
    source: Source<'static>,
    key: Option<String>,
    adapter: A,
    body: F,
) -> A::Output
where
    A: Adapter,
    F: Future<Output = A::Output>,
{
    // `.await` outside the `match`: a scrutinee alive across it would be part of the future.
    let source = match hit_by(site, scope, source, key.as_deref().map(Text), adapter) {
        Ok(out) => return out,
        Err(source) => source,
    };
    fill(site, scope, source, key, adapter, body).await
}

/// The protection of `site`'s fills in `cache`.
fn policy<A: Adapter>(site: &Site, scope: &'static Scope, cache: &Cache, adapter: A) -> FillPolicy {
    let mut policy = cache.default_policy();
    policy.function = scope.function();
    if let Some(protect) = site.protect {
        policy.lock = protect;
    }
    if let Some(early) = site.early_refresh {
        policy.early_refresh = early;
    }
    if let Some(beta) = site.beta {
        policy.beta = beta;
    }
    if let Some(ms) = site.stale_if_error_ms {
        policy.stale_if_error = Some(Duration::from_millis(ms));
    }
    policy.tags = adapter.tags().map(std::sync::Arc::from);
    policy
}

/// What the rest of a fill needs to know of its call.
struct Call {
    scope: &'static Scope,
    cache: Cache,
    ttl: Ttl,
    version: u32,
    policy: FillPolicy,
    key: String,
}

/// A call whose first read found no value to return: the rest of the fill.
async fn miss<A, F>(call: Call, rest: Rest<A::Value>, adapter: A, body: F) -> A::Output
where
    A: Adapter,
    F: Future<Output = A::Output>,
{
    let Call {
        scope,
        cache,
        ttl,
        version,
        policy,
        key,
    } = call;
    let filled = cache
        .fill_rest(
            rest,
            &key,
            ttl,
            version,
            &policy,
            move |e| adapter.fail(e),
            move || async move { adapter.split(body.await) },
        )
        .await;
    match filled {
        Ok(v) => {
            tracing::debug!(
                function = scope.name,
                cache = cache.name(),
                key = short_key(&key),
                outcome = "value"
            );
            adapter.join(v)
        }
        Err(out) => {
            tracing::debug!(
                function = scope.name,
                cache = cache.name(),
                key = short_key(&key),
                outcome = "error, not stored"
            );
            out
        }
    }
}

/// The wrapper of a cached function with `request_scope`: inside a
/// [`request_scope`](crate::request_scope), the scope's value for this key if it has one;
/// otherwise [`run`], whose value is kept in the scope unless it is one the function does
/// not store (an `Err` without `cache_err`, a `None` without `cache_none`). Concurrent calls
/// in one scope wait for the first instead of running the body too.
pub async fn run_in_request<A, F>(
    site: &'static Site,
    scope: &'static Scope,
    source: Source<'static>,
    key: Option<String>,
    adapter: A,
    body: F,
) -> A::Output
where
    A: Adapter,
    F: Future<Output = A::Output>,
{
    let slot = match &key {
        Some(key) => crate::request::slot::<A::Value>(scope.name, key).map(|s| (s, key)),
        None => None,
    };
    let Some((slot, k)) = slot else {
        return run(site, scope, source, key, adapter, body).await;
    };
    if let Some(v) = slot.get() {
        tracing::trace!(
            function = scope.name,
            key = short_key(k),
            outcome = "request scope hit"
        );
        return adapter.join(v.clone());
    }
    let filled = slot
        .get_or_try_init(move || async move {
            adapter.split(run(site, scope, source, key, adapter, body).await)
        })
        .await;
    match filled {
        Ok(v) => adapter.join(v.clone()),
        Err(out) => out,
    }
}

/// The `_invalidate` companion: removes the value from the cache and from the current request
/// scope, so a request that changes data reads it afresh.
pub async fn invalidate(
    site: &'static Site,
    scope: &'static Scope,
    source: Source<'_>,
    key: Option<String>,
) -> Result<bool, CacheError> {
    let Some(key) = key else {
        return Ok(false);
    };
    let key = key.as_str();
    let in_scope = crate::request::forget(scope.name, key);
    match source.resolve(site, scope)? {
        Some((cache, _)) => Ok(cache.delete(key).await? || in_scope),
        None => Ok(in_scope),
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyText, PushAny as _, PushFast as _, part, scope_name};

    /// What the expansion writes for a template value.
    macro_rules! written {
        ($v:expr) => {{
            let mut k = KeyText::new();
            (&part(&$v)).push_part(&mut k);
            k.into_string()
        }};
    }

    #[test]
    fn template_values_write_what_display_writes() {
        macro_rules! check {
            ($($t:ty),*) => {$(
                for v in [<$t>::MIN, <$t>::MAX, 0 as $t, 1 as $t, 9 as $t, 10 as $t, <$t>::MAX / 3] {
                    assert_eq!(written!(v), v.to_string(), "{}", stringify!($t));
                }
            )*};
        }
        check!(
            u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
        );
        for v in [-1i64, -10, -123_456_789] {
            assert_eq!(written!(v), v.to_string());
        }
        let s = String::from("ä:b");
        assert_eq!(written!(s), "ä:b");
        assert_eq!(written!("x y"), "x y");
        assert_eq!(written!(&&7u32), "7");
        // Anything else goes through Display.
        assert_eq!(written!(1.5f64), "1.5");
        assert_eq!(written!('c'), "c");
        assert_eq!(written!(std::net::Ipv4Addr::LOCALHOST), "127.0.0.1");
    }

    #[test]
    fn scope_names_from_where_the_function_is() {
        let m = "app::repo";
        let name = |at: &str| scope_name(m, at, "f");
        // Free functions, also generic ones and companions: the format of automatic keys.
        assert_eq!(
            name("app::repo::f::{{closure}}::{{closure}}"),
            "app::repo::f"
        );
        assert_eq!(name("app::repo::f<u32>::{{closure}}"), "app::repo::f");
        assert_eq!(name("app::repo::f_cache_key::{{closure}}"), "app::repo::f");
        assert_eq!(
            name("app::repo::f::{closure#0}::{async_block#1}"),
            "app::repo::f"
        );
        // Methods and associated functions.
        assert_eq!(
            name("app::repo::Orders::f::{{closure}}"),
            "app::repo::Orders::f"
        );
        assert_eq!(
            name("app::repo::Repo<app::repo::Apples, u64>::f::{{closure}}"),
            "app::repo::Repo<Apples, u64>::f"
        );
        assert_eq!(
            name("app::repo::Repo<fn(u8) -> app::repo::A>::f<T>::{{closure}}"),
            "app::repo::Repo<fn(u8) -> A>::f"
        );
        assert_eq!(
            name("<app::repo::Page as app::repo::Title>::f::{{closure}}::{{closure}}"),
            "app::repo::<Page as Title>::f"
        );
        assert_eq!(
            name("<alloc::string::String as app::Named>::f::{{closure}}"),
            "app::repo::<alloc::string::String as app::Named>::f"
        );
        // A type of another module keeps its own path; one whose path ends like this
        // module's is not cut.
        assert_eq!(
            name("app::models::User::f::{{closure}}"),
            "app::models::User::f"
        );
        assert_eq!(
            name("x::app::repo::T::f::{{closure}}"),
            "x::app::repo::T::f"
        );
        // A function inside a function.
        assert_eq!(
            name("app::repo::outer::f::{{closure}}"),
            "app::repo::outer::f"
        );
    }
}
