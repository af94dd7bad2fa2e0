//! The flow allocator's side of `queues` > 1 in virtual time: a worker thread
//! carries a flow's data, so the allocator learns of it through `data_route`
//! (what the worker needs), `data_heard` and `data_sent` (what it saw), not
//! through `data_rx`/`data_tx` (docs/decisions/0031-receive-queues.md).

#[allow(unused_imports)]
mod common;
use common::*;
use ipcpd_eth::wire::FrameType;

#[test]
fn data_route_is_data_tx_without_its_side_effect() {
    let mut net = connected(1000);
    let now = net.now;
    let route = net.nodes[A].fa.data_route(1);
    assert!(route.is_some());
    assert_eq!(route, net.nodes[A].fa.data_tx(now, 1));
    // Asking for the route is not traffic: A keeps sending keep-alives.
    let start = net.now;
    for _ in 0..10 {
        net.advance(ms(100));
        assert_eq!(net.nodes[A].fa.data_route(1), route);
    }
    assert_eq!(net.sent(A, FrameType::KeepAlive, start, net.now).len(), 4);
    net.dealloc(A, 1);
    assert_eq!(net.nodes[A].fa.data_route(1), None);
    assert_eq!(net.nodes[A].fa.data_route(12345), None);
}

#[test]
fn data_a_worker_saw_keeps_the_flow_up_and_keepalives_quiet() {
    let mut net = connected(1000);
    // Nothing from B reaches A's allocator: only its worker sees B's data.
    net.drop = Box::new(|from, _| from == B);
    let start = net.now;
    for _ in 0..100 {
        net.advance(ms(100));
        let now = net.now;
        net.nodes[A].fa.data_heard(now, 1);
        net.nodes[A].fa.data_sent(now, 1);
        net.pump();
    }
    assert_eq!(net.states(A, 1), [], "the flow stayed up");
    assert_eq!(net.sent(A, FrameType::KeepAlive, start, net.now), []);
    // The worker stops seeing data: PEER one timeout after the last.
    let last = net.now;
    net.advance(ms(1000));
    assert_eq!(
        net.states(A, 1),
        [(last + ms(1000), DownCause::Unresponsive)]
    );
    // Data again: Up at once.
    let now = net.now;
    net.nodes[A].fa.data_heard(now, 1);
    net.pump();
    assert_eq!(net.states(A, 1).len(), 2);
    assert_eq!(net.states(A, 1)[1], (now, DownCause::Up));
}

#[test]
fn data_heard_for_a_flow_that_is_not_live_changes_nothing() {
    let mut net = connected(1000);
    net.dealloc(A, 1);
    let now = net.now;
    net.nodes[A].fa.data_heard(now, 1);
    net.nodes[A].fa.data_heard(now, 999);
    net.nodes[A].fa.data_sent(now, 999);
    net.pump();
    assert_eq!(net.nodes[A].fa.data_route(1), None);
}
