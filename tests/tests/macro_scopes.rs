//! Automatic keys, per-function statistics and `cache.functions` overrides belong to one
//! (Self type, method) pair: same-named methods of different types, and the instantiations of
//! a generic impl, never share them.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use lexigram_cache::{cacheable, function_stats};
use lexigram_cache_tests::config::install_with_functions_off;
use serde::{Deserialize, Serialize};

/// Every test here goes through the installed registry, whose configuration switches one
/// type's method off.
async fn setup() {
    install_with_functions_off(&["macro_scopes::Orders::label"]).await;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Users {
    id: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Orders {
    id: u64,
}

static USERS_LABEL_RUNS: AtomicUsize = AtomicUsize::new(0);
static ORDERS_LABEL_RUNS: AtomicUsize = AtomicUsize::new(0);

impl Users {
    #[cacheable(ttl = 60)]
    async fn name(&self, id: u64) -> String {
        format!("user {id}")
    }

    #[cacheable(ttl = 60)]
    async fn counted(&self, id: u64) -> u64 {
        id
    }

    #[cacheable(ttl = 60)]
    async fn label(&self, id: u64) -> String {
        USERS_LABEL_RUNS.fetch_add(1, Ordering::SeqCst);
        format!("user label {id}")
    }

    /// No receiver, but `Self` in the signature: still told apart from `Orders::build`.
    #[cacheable(ttl = 60)]
    async fn build(id: u64) -> Self {
        Users { id: id + 100 }
    }
}

impl Orders {
    #[cacheable(ttl = 60)]
    async fn name(&self, id: u64) -> String {
        format!("order {id}")
    }

    #[cacheable(ttl = 60)]
    async fn counted(&self, id: u64) -> u64 {
        id
    }

    #[cacheable(ttl = 60)]
    async fn label(&self, id: u64) -> String {
        ORDERS_LABEL_RUNS.fetch_add(1, Ordering::SeqCst);
        format!("order label {id}")
    }

    #[cacheable(ttl = 60)]
    async fn build(id: u64) -> Self {
        Orders { id: id + 200 }
    }
}

#[tokio::test]
async fn same_method_name_in_two_impls_keeps_its_own_values() {
    setup().await;
    let (users, orders) = (Users { id: 0 }, Orders { id: 0 });
    assert_eq!(users.name(1).await, "user 1");
    assert_eq!(orders.name(1).await, "order 1");
    assert_eq!(users.name(1).await, "user 1");
    assert_eq!(orders.name(1).await, "order 1");
    assert_ne!(users.name_cache_key(1), orders.name_cache_key(1));
    assert!(
        users
            .name_cache_key(1)
            .starts_with("macro_scopes::Users::name:v0:"),
        "{}",
        users.name_cache_key(1)
    );
    assert!(
        orders
            .name_cache_key(1)
            .starts_with("macro_scopes::Orders::name:v0:")
    );
    assert_eq!(Users::build(1).await, Users { id: 101 });
    assert_eq!(Orders::build(1).await, Orders { id: 201 });
    assert_eq!(Users::build(1).await, Users { id: 101 });
    assert_eq!(Orders::build(1).await, Orders { id: 201 });
}

trait Describe {
    async fn describe(&self, id: u64) -> String;
}

struct Cat;
struct Dog;

impl Describe for Cat {
    #[cacheable(ttl = 60, companions = false)]
    async fn describe(&self, id: u64) -> String {
        format!("cat {id}")
    }
}

impl Describe for Dog {
    #[cacheable(ttl = 60, companions = false)]
    async fn describe(&self, id: u64) -> String {
        format!("dog {id}")
    }
}

#[tokio::test]
async fn one_trait_implemented_by_two_types() {
    setup().await;
    for _ in 0..2 {
        assert_eq!(Cat.describe(3).await, "cat 3");
        assert_eq!(Dog.describe(3).await, "dog 3");
    }
}

trait Fruit: Send + Sync + 'static {
    const NAME: &'static str;
}
struct Apples;
struct Pears;
impl Fruit for Apples {
    const NAME: &'static str = "apples";
}
impl Fruit for Pears {
    const NAME: &'static str = "pears";
}

struct Table<T>(PhantomData<T>);

impl<T: Fruit> Table<T> {
    #[cacheable(ttl = 60)]
    async fn count(&self, t: u64) -> String {
        format!("{} {t}", T::NAME)
    }

    /// No receiver and no `Self` in the signature: still one scope per instantiation.
    #[cacheable(ttl = 60)]
    async fn kind(t: u64) -> String {
        format!("{} kind {t}", T::NAME)
    }
}

#[tokio::test]
async fn every_instantiation_of_a_generic_impl_has_its_own_keys() {
    setup().await;
    let (apples, pears) = (Table::<Apples>(PhantomData), Table::<Pears>(PhantomData));
    for _ in 0..2 {
        assert_eq!(apples.count(5).await, "apples 5");
        assert_eq!(pears.count(5).await, "pears 5");
    }
    for _ in 0..2 {
        assert_eq!(Table::<Apples>::kind(5).await, "apples kind 5");
        assert_eq!(Table::<Pears>::kind(5).await, "pears kind 5");
    }
    let key = apples.count_cache_key(5);
    assert!(
        key.starts_with("macro_scopes::Table<Apples>::count:v0:"),
        "{key}"
    );
    assert!(
        pears
            .count_cache_key(5)
            .starts_with("macro_scopes::Table<Pears>::count:v0:")
    );
}

/// Associated functions with neither `self` nor `Self` in their signatures.
struct Left;
struct Right;

impl Left {
    #[cacheable(ttl = 60)]
    async fn make(id: u64) -> u64 {
        id
    }
}

impl Right {
    #[cacheable(ttl = 60)]
    async fn make(id: u64) -> u64 {
        id + 1
    }
}

#[tokio::test]
async fn associated_functions_without_self_keep_their_own_values() {
    setup().await;
    for _ in 0..2 {
        assert_eq!(Left::make(1).await, 1);
        assert_eq!(Right::make(1).await, 2);
    }
    assert!(Left::make_cache_key(1).starts_with("macro_scopes::Left::make:v0:"));
    assert!(Right::make_cache_key(1).starts_with("macro_scopes::Right::make:v0:"));
}

/// Two traits with a method of one name, on one type.
trait Title {
    async fn text(&self, id: u64) -> String;
}
trait Subtitle {
    async fn text(&self, id: u64) -> String;
}

struct Page;

impl Title for Page {
    #[cacheable(ttl = 60, companions = false)]
    async fn text(&self, id: u64) -> String {
        format!("title {id}")
    }
}

impl Subtitle for Page {
    #[cacheable(ttl = 60, companions = false)]
    async fn text(&self, id: u64) -> String {
        format!("subtitle {id}")
    }
}

#[tokio::test]
async fn same_named_methods_of_two_traits_on_one_type() {
    setup().await;
    for _ in 0..2 {
        assert_eq!(Title::text(&Page, 1).await, "title 1");
        assert_eq!(Subtitle::text(&Page, 1).await, "subtitle 1");
    }
    let names: Vec<_> = function_stats()
        .into_iter()
        .map(|f| f.function)
        .filter(|f| f.ends_with("::text"))
        .collect();
    assert_eq!(
        names,
        [
            "macro_scopes::<Page as Subtitle>::text",
            "macro_scopes::<Page as Title>::text"
        ]
    );
}

#[tokio::test]
async fn function_stats_are_kept_per_type() {
    setup().await;
    let (users, orders) = (Users { id: 0 }, Orders { id: 0 });
    users.counted(1).await;
    users.counted(1).await;
    orders.counted(1).await;
    let all = function_stats();
    let of = |name: &str| {
        all.iter()
            .find(|f| f.function == name)
            .map(|f| (f.stats.misses, f.stats.hits))
    };
    assert_eq!(of("macro_scopes::Users::counted"), Some((1, 1)), "{all:#?}");
    assert_eq!(
        of("macro_scopes::Orders::counted"),
        Some((1, 0)),
        "{all:#?}"
    );
}

#[tokio::test]
async fn an_override_targets_one_types_method_only() {
    setup().await;
    let (users, orders) = (Users { id: 0 }, Orders { id: 0 });
    let (u0, o0) = (
        USERS_LABEL_RUNS.load(Ordering::SeqCst),
        ORDERS_LABEL_RUNS.load(Ordering::SeqCst),
    );
    for _ in 0..3 {
        assert_eq!(users.label(9).await, "user label 9");
        assert_eq!(orders.label(9).await, "order label 9");
    }
    // `macro_scopes::Orders::label` is switched off: its body runs every time.
    assert_eq!(USERS_LABEL_RUNS.load(Ordering::SeqCst) - u0, 1);
    assert_eq!(ORDERS_LABEL_RUNS.load(Ordering::SeqCst) - o0, 3);
}

/// More instantiations than the lock-free slots hold.
struct Nth<const K: usize>;

impl<const K: usize> Nth<K> {
    #[cacheable(ttl = 60)]
    async fn k(&self) -> usize {
        K
    }
}

#[tokio::test]
async fn many_instantiations_keep_their_own_values() {
    setup().await;
    async fn all() -> Vec<usize> {
        vec![
            Nth::<0>.k().await,
            Nth::<1>.k().await,
            Nth::<2>.k().await,
            Nth::<3>.k().await,
            Nth::<4>.k().await,
            Nth::<5>.k().await,
            Nth::<6>.k().await,
            Nth::<7>.k().await,
            Nth::<8>.k().await,
            Nth::<9>.k().await,
            Nth::<10>.k().await,
        ]
    }
    let expected: Vec<usize> = (0..=10).collect();
    assert_eq!(all().await, expected);
    assert_eq!(all().await, expected);
    assert!(
        Nth::<10>
            .k_cache_key()
            .starts_with("macro_scopes::Nth<10>::k:v0:")
    );
}
