//! Tests of the autoscaler's calculation and conditions.

use super::*;

fn ready(name: &str, usage: i64, request: i64) -> PodSample {
    PodSample {
        name: name.into(),
        state: PodState::Ready,
        usage: Some(usage),
        request: Some(request),
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

#[test]
fn the_formula_scales_by_the_usage_ratio() {
    // 2 pods at 90 % of a 100m request, target 50 %: ceil(2 × 1.8) = 4.
    let pods = [ready("a", 90, 100), ready("b", 90, 100)];
    let (r, cur) = calc_replicas(2, &pods, Target::Utilization(50), TOLERANCE).unwrap();
    assert_eq!((r, cur.utilization, cur.average), (4, Some(90), 90));
    // Far below: scale down.
    let pods = [
        ready("a", 10, 100),
        ready("b", 10, 100),
        ready("c", 10, 100),
        ready("d", 10, 100),
    ];
    assert_eq!(
        calc_replicas(4, &pods, Target::Utilization(50), TOLERANCE)
            .unwrap()
            .0,
        1
    );
}

#[test]
fn within_ten_percent_nothing_changes() {
    let pods = [ready("a", 54, 100), ready("b", 54, 100)];
    assert_eq!(
        calc_replicas(2, &pods, Target::Utilization(50), TOLERANCE)
            .unwrap()
            .0,
        2
    );
    let pods = [ready("a", 56, 100), ready("b", 56, 100)];
    assert_eq!(
        calc_replicas(2, &pods, Target::Utilization(50), TOLERANCE)
            .unwrap()
            .0,
        3
    );
}

#[test]
fn average_value_targets_use_the_per_pod_average() {
    let mi = 1024 * 1024;
    let pods = [ready("a", 300 * mi, 0), ready("b", 100 * mi, 0)];
    let (r, cur) = calc_replicas(2, &pods, Target::AverageValue(100 * mi), TOLERANCE).unwrap();
    assert_eq!((r, cur.utilization, cur.average), (4, None, 200 * mi));
}

#[test]
fn missing_and_unready_pods_are_treated_conservatively() {
    let missing = PodSample {
        name: "m".into(),
        state: PodState::Ready,
        usage: None,
        request: Some(100),
    };
    let unready = PodSample {
        name: "u".into(),
        state: PodState::Unready,
        usage: None,
        request: Some(100),
    };
    // Scale-down: the missing pod counts as 100 % → (10+10+100)/3 = 40 %
    // → ratio 0.8 → ceil(0.8 × 3) = 3: no change from 3.
    let pods = [ready("a", 10, 100), ready("b", 10, 100), missing.clone()];
    assert_eq!(
        calc_replicas(3, &pods, Target::Utilization(50), TOLERANCE)
            .unwrap()
            .0,
        3
    );
    // Scale-up: missing and unready count as 0 → (200+0+0)/3 = 66 %
    // → ceil(1.33 × 3) = 4 instead of ceil(4 × 1) = 4 from one pod.
    let pods = [ready("a", 200, 100), missing, unready.clone()];
    assert_eq!(
        calc_replicas(3, &pods, Target::Utilization(50), TOLERANCE)
            .unwrap()
            .0,
        4
    );
    // A small scale-up that the zeros cancel out: no change.
    let pods = [ready("a", 60, 100), unready];
    assert_eq!(
        calc_replicas(2, &pods, Target::Utilization(50), TOLERANCE)
            .unwrap()
            .0,
        2
    );
}

#[test]
fn ignored_pods_do_not_count_and_no_metrics_is_an_error() {
    let gone = PodSample {
        name: "g".into(),
        state: PodState::Ignored,
        usage: Some(1000),
        request: Some(100),
    };
    let pods = [ready("a", 50, 100), gone];
    assert_eq!(
        calc_replicas(1, &pods, Target::Utilization(50), TOLERANCE)
            .unwrap()
            .0,
        1
    );
    let none = [PodSample {
        name: "a".into(),
        state: PodState::Ready,
        usage: None,
        request: Some(100),
    }];
    let e = calc_replicas(1, &none, Target::Utilization(50), TOLERANCE).unwrap_err();
    assert!(e.contains("did not receive metrics"), "{e}");
    assert!(calc_replicas(1, &[], Target::Utilization(50), TOLERANCE)
        .unwrap_err()
        .contains("no pods"));
    let no_request = [PodSample {
        name: "a".into(),
        state: PodState::Ready,
        usage: Some(5),
        request: None,
    }];
    assert!(calc_replicas(1, &no_request, Target::Utilization(50), TOLERANCE)
        .unwrap_err()
        .contains("missing request"));
}

#[test]
fn scale_down_waits_for_the_highest_recommendation_in_the_window() {
    let w = Duration::from_secs(300);
    let mut h = Vec::new();
    assert_eq!(
        stabilize(&mut h, t(0), 1, 5, Duration::ZERO, w),
        5,
        "scale up at once"
    );
    assert_eq!(
        stabilize(&mut h, t(60), 5, 2, Duration::ZERO, w),
        5,
        "held by the 5 a minute ago"
    );
    assert_eq!(stabilize(&mut h, t(200), 5, 3, Duration::ZERO, w), 5);
    assert_eq!(
        stabilize(&mut h, t(301), 5, 2, Duration::ZERO, w),
        3,
        "the 5 left the window; the 3 has not"
    );
    assert_eq!(stabilize(&mut h, t(501), 3, 2, Duration::ZERO, w), 2);
    assert!(h.len() <= 3, "old recommendations are forgotten: {h:?}");
    // No window: straight to the proposal.
    let mut h = Vec::new();
    stabilize(&mut h, t(0), 1, 5, Duration::ZERO, Duration::ZERO);
    assert_eq!(stabilize(&mut h, t(1), 5, 2, Duration::ZERO, Duration::ZERO), 2);
}

#[test]
fn a_scale_up_window_takes_the_lowest_recent_recommendation() {
    let mut h = Vec::new();
    let up = Duration::from_secs(60);
    assert_eq!(stabilize(&mut h, t(0), 2, 2, up, Duration::ZERO), 2);
    assert_eq!(stabilize(&mut h, t(10), 2, 6, up, Duration::ZERO), 2);
    assert_eq!(stabilize(&mut h, t(61), 2, 6, up, Duration::ZERO), 6);
}

#[test]
fn limits_bound_the_result_and_say_why() {
    assert_eq!(apply_limits(2, 3, 1, 10), (3, Limit::WithinRange));
    assert_eq!(apply_limits(2, 0, 1, 10), (1, Limit::TooFew));
    assert_eq!(apply_limits(3, 12, 1, 5), (5, Limit::TooMany));
    // From 1 replica at most 4, from 5 at most 10.
    assert_eq!(apply_limits(1, 9, 1, 20), (4, Limit::ScaleUpLimit));
    assert_eq!(apply_limits(5, 30, 1, 20), (10, Limit::ScaleUpLimit));
}
