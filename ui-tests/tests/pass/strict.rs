//! Every shape compiles without a single warning, with one-line bodies, and no name of the
//! user's can collide with the expansion's own bindings.
#![deny(warnings)]

use lexigram_cache::{Cache, cacheable};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
}

#[cacheable(ttl = 60)]
async fn one_line(id: u64) -> u64 { id * 2 }

#[cacheable(ttl = 60, key = "t:{id}")]
async fn one_line_template(id: u64) -> u64 { id + 1 }

#[cacheable(ttl = "1h30m", key = "user:{id}", prefix = "p:", version = 3)]
pub async fn one_line_result(id: u64) -> Result<User, std::io::Error> { Ok(User { id }) }

#[cacheable(ttl = "never", cache_none, protect = false, early_refresh = true, beta = 1.5)]
async fn one_line_option(id: u64) -> Option<u64> { Some(id) }

#[cacheable(backend = "default", stale_if_error = "10m", skip(trace_id))]
async fn one_line_skip(id: u64, trace_id: String) -> Result<u64, String> { Ok(id + trace_id.len() as u64) }

#[cacheable(key = "g:{value}")]
async fn one_line_generic<T: std::fmt::Display + Send + Sync>(value: T) -> String { value.to_string() }

#[cacheable(ttl = 60, key = "e:{id}", cache_err)]
async fn one_line_err(id: u64) -> Result<u64, String> { Err(id.to_string()) }

/// A borrowed error type is fine: only `Ok` is stored.
#[cacheable(ttl = 60, key = "b:{id}")]
async fn borrowed_error(id: u64) -> Result<u64, &'static str> { if id > 0 { Ok(id) } else { Err("zero") } }

/// Parameters named like the expansion's internal bindings keep their own values.
#[cacheable(ttl = 60)]
async fn internal_names(
    __lex_key: u64,
    __lex_source: u64,
    __lex_body: u64,
    __lex_adapter: u64,
    __lex_scope: u64,
    __lex_h: u64,
    __lex_ok: u64,
    __lex_ret: u64,
) -> u64 {
    __lex_key + __lex_source + __lex_body + __lex_adapter + __lex_scope + __lex_h + __lex_ok + __lex_ret
}

#[cacheable(ttl = 60, key = "n:{__lex_key}:{__lex_k}")]
async fn internal_names_in_template(__lex_key: u64, __lex_k: u64) -> u64 { __lex_key * 10 + __lex_k }

struct Repo {
    cache: Cache,
    tenant: String,
}

impl Repo {
    #[cacheable(key = "t:{self.tenant}:{id}", cache = self.cache)]
    async fn get(&self, id: u64) -> Result<u64, std::io::Error> { Ok(id) }

    #[cacheable(ttl = 60)]
    async fn auto(&self, id: u64) -> u64 { id + 7 }

    #[cacheable(ttl = 60)]
    async fn make(id: u64) -> Option<u64> { Some(id) }
}

/// Every receiver that shares the value.
struct Tenant {
    db: String,
}

impl Tenant {
    #[cacheable(ttl = 60, key = "a:{self.db}:{id}")]
    async fn typed_ref(self: &Self, id: u64) -> String { format!("{}{id}", self.db) }

    #[cacheable(ttl = 60, key = "b:{self.db}:{id}")]
    async fn arc_ref(self: &std::sync::Arc<Self>, id: u64) -> String { format!("{}{id}", self.db) }

    #[cacheable(ttl = 60, key = "c:{self.db}:{id}")]
    async fn arc(self: std::sync::Arc<Self>, id: u64) -> String { format!("{}{id}", self.db) }

    #[cacheable(ttl = 60, key = "d:{self.db}:{id}")]
    async fn pinned(self: std::pin::Pin<&Self>, id: u64) -> String { format!("{}{id}", self.db) }

    #[cacheable(ttl = 60, skip(self))]
    async fn skips_self(&self, id: u64) -> u64 { id }
}

/// A template may leave a parameter out when `skip` says so; raw identifiers work.
#[cacheable(ttl = 60, key = "kind:{r#type}", skip(trace))]
async fn raw_name(r#type: u32, trace: u32) -> u32 { r#type + trace }

/// A generic impl's methods take automatic keys: each instantiation has its own.
struct Store<T>(std::marker::PhantomData<T>);

impl<T: Send + Sync + 'static> Store<T> {
    #[cacheable(ttl = 60)]
    async fn size(&self, n: u64) -> u64 { n + std::mem::size_of::<T>() as u64 }
}

/// Two `cfg` alternatives of one function: each companion pair follows its function.
#[cfg(unix)]
#[cacheable(ttl = 60)]
async fn per_os(id: u64) -> u64 { id }

#[cfg(not(unix))]
#[cacheable(ttl = 60)]
async fn per_os(id: u64) -> u64 { id }

/// `#[allow]` on the function reaches its companions.
#[allow(non_snake_case)]
#[cacheable(ttl = 60)]
async fn Shouting(ID: u64) -> u64 { ID }

/// The runtime crate under another name.
mod renamed {
    extern crate lexigram_cache as cache_rt;

    #[cache_rt::cacheable(ttl = 60, crate = "cache_rt")]
    pub async fn through_renamed(id: u64) -> u64 { id + 1 }
}

trait Lookup {
    async fn find(&self, id: u64) -> u64;

    /// On a default body: one scope per implementing type.
    #[cacheable(ttl = 60, companions = false)]
    async fn twice(&self, id: u64) -> u64 { id * 2 }
}

impl Lookup for Repo {
    #[cacheable(key = "find:{id}", companions = false)]
    async fn find(&self, id: u64) -> u64 { id }
}

/// Local items named like the paths the expansion uses, and shadowed prelude names.
mod shadowing {
    #![allow(dead_code, non_camel_case_types)]
    use ::lexigram_cache::cacheable;

    mod core {}
    mod std {}
    mod lexigram_cache {}
    struct Option;
    struct Some;
    struct None;
    struct Result;
    struct Ok;
    struct Err;
    struct String;
    struct Box;
    struct Vec;
    trait Send {}
    trait Sync {}
    trait Future {}
    trait Into {}
    trait Clone {}

    #[cacheable(ttl = 60)]
    pub async fn shadowed(id: u64) -> u64 { id + 3 }

    #[cacheable(ttl = 60, key = "s:{id}")]
    pub async fn shadowed_result(id: u64) -> ::core::result::Result<u64, ::std::io::Error> { ::core::result::Result::Ok(id) }
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

#[tokio::main]
async fn main() {
    let repo = Repo {
        cache: lexigram_cache::CacheModule::stub().cache(),
        tenant: "t".into(),
    };
    assert_eq!(one_line(1).await, 2);
    assert_eq!(one_line_template(1).await, 2);
    assert!(one_line_result(1).await.is_ok());
    assert_eq!(one_line_option(2).await, Some(2));
    assert_eq!(one_line_skip(3, "x".into()).await, Ok(4));
    assert_eq!(one_line_generic(4).await, "4");
    assert_eq!(one_line_err(5).await, Err("5".to_string()));
    assert_eq!(borrowed_error(0).await, Err("zero"));
    assert_eq!(internal_names(1, 2, 3, 4, 5, 6, 7, 8).await, 36);
    assert_eq!(internal_names(1, 2, 3, 4, 5, 6, 7, 8).await, 36);
    assert_eq!(internal_names_in_template(4, 2).await, 42);
    assert_eq!(internal_names_in_template_cache_key(4, 2), "n:4:2");
    assert_eq!(repo.get(5).await.unwrap_or_default(), 5);
    assert_eq!(repo.auto(5).await, 12);
    assert_eq!(Repo::make(5).await, Some(5));
    assert_eq!(repo.find(6).await, 6);
    assert_eq!(repo.twice(6).await, 12);
    assert_eq!(shadowing::shadowed(1).await, 4);
    assert_eq!(shadowing::shadowed_result(1).await.unwrap_or_default(), 1);
    let tenant = std::sync::Arc::new(Tenant { db: "x".into() });
    assert_eq!(tenant.typed_ref(1).await, "x1");
    assert_eq!(tenant.arc_ref(2).await, "x2");
    assert_eq!(tenant.clone().arc(3).await, "x3");
    assert_eq!(std::pin::Pin::new(&*tenant).pinned(4).await, "x4");
    assert_eq!(tenant.skips_self(5).await, 5);
    assert_eq!(raw_name(7, 0).await, 7);
    assert_eq!(raw_name_cache_key(7, 1), "kind:7");
    assert_eq!(Store::<u8>(std::marker::PhantomData).size(1).await, 2);
    assert_eq!(Store::<u64>(std::marker::PhantomData).size(1).await, 9);
    assert_eq!(per_os(1).await, 1);
    assert!(per_os_cache_key(1).contains("::per_os:v0:"));
    assert_eq!(Shouting(1).await, 1);
    assert!(Shouting_cache_key(1).contains("::Shouting:v0:"));
    assert_eq!(renamed::through_renamed(1).await, 2);
    let _ = assert_send(one_line(1));
    let _ = assert_send(repo.get(1));
}
