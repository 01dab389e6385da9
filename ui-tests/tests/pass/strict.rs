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
    async fn make(id: u64) -> Option<u64> where Self: Sized { Some(id) }
}

trait Lookup {
    async fn find(&self, id: u64) -> u64;
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
    assert_eq!(internal_names(1, 2, 3, 4, 5, 6, 7, 8).await, 36);
    assert_eq!(internal_names(1, 2, 3, 4, 5, 6, 7, 8).await, 36);
    assert_eq!(internal_names_in_template(4, 2).await, 42);
    assert_eq!(internal_names_in_template_cache_key(4, 2), "n:4:2");
    assert_eq!(repo.get(5).await.unwrap_or_default(), 5);
    assert_eq!(repo.auto(5).await, 12);
    assert_eq!(Repo::make(5).await, Some(5));
    assert_eq!(repo.find(6).await, 6);
    assert_eq!(shadowing::shadowed(1).await, 4);
    assert_eq!(shadowing::shadowed_result(1).await.unwrap_or_default(), 1);
    let _ = assert_send(one_line(1));
    let _ = assert_send(repo.get(1));
}
