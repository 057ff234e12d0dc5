//! Redis pub/sub subscriptions (job events, queue wake-ups) come back after the server
//! drops their connection.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_restored_after_its_connection_is_killed() {
    // Runs with the distributed-profile suite (and so always in CI).
    if common::postgres_url().is_none() {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the Redis test");
        return;
    }
    let base = common::redis_url();
    let admin = redis::Client::open(base.as_str()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.expect("Redis is reachable");
    // A user of its own, so killing its connections touches no other test's.
    let user = format!("parley-test-{}", uuid::Uuid::new_v4().simple());
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", "nopass", "~*", "&*", "+@all"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = base.replacen("redis://", &format!("redis://{user}:x@"), 1);
    let channel = format!("{user}:channel");
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = got.clone();
    parley_shared::redis_sub::subscribe(
        redis::Client::open(url.as_str()).unwrap(),
        channel.clone(),
        "test",
        move |p| sink.lock().unwrap().push(p),
    )
    .await
    .unwrap();

    let publish = |admin: &mut redis::aio::MultiplexedConnection, msg: &'static str| {
        let (mut admin, channel) = (admin.clone(), channel.clone());
        async move { redis::cmd("PUBLISH").arg(&channel).arg(msg).query_async::<i64>(&mut admin).await.unwrap() }
    };
    assert_eq!(publish(&mut admin, "before").await, 1);
    let killed: i64 = redis::cmd("CLIENT").arg(&["KILL", "USER", &user][..]).query_async(&mut admin).await.unwrap();
    assert!(killed >= 1);
    // Published until someone listens again, then once more.
    let deadline = Instant::now() + Duration::from_secs(20);
    while publish(&mut admin, "probe").await == 0 {
        assert!(Instant::now() < deadline, "the subscription never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish(&mut admin, "after").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.lock().unwrap().iter().any(|m| m == "after") {
        assert!(Instant::now() < deadline, "{:?}", got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got.lock().unwrap()[0], "before");
    let _: () = redis::cmd("ACL").arg(&["DELUSER", &user][..]).query_async(&mut admin).await.unwrap();
}
