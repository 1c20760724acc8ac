//! The backend conformance suite: the behaviour of [`crate::Broker`] written down once, so that
//! every backend (embedded now, PostgreSQL later) is held to exactly the same tests.
//!
//! A backend implements [`Harness`] (open or reopen a broker on a directory with a given clock)
//! and expands [`crate::conformance_tests!`] in one of its integration tests, which makes one
//! test per behaviour:
//!
//! ```ignore
//! struct Embedded;
//!
//! #[async_trait::async_trait]
//! impl opal_core::conformance::Harness for Embedded {
//!     async fn open(&self, dir: &Path, clock: Clock) -> Arc<dyn Broker> { /* … */ }
//! }
//!
//! opal_core::conformance_tests!(Embedded);
//! ```
//!
//! Time is a manual [`crate::Clock`] in every test: timers (ack deadlines, backoff, delays,
//! dedup windows, long-poll waits) move only when a test advances the clock, and real time is
//! used only in short bounded waits that let background tasks run. Where the specification
//! leaves room, a test takes the strict reading and says so in its doc comment.

pub mod ack;
pub mod dead_letter;
pub mod dedup;
pub mod delay;
pub mod filter;
pub mod manage;
pub mod ordering;
pub mod publish;
pub mod push;
pub mod redelivery;
pub mod restart;
pub mod retention;
pub mod seek;
pub mod stats;
pub mod support;
pub mod tasks;

pub use support::{Fixture, Harness};

/// Expands to one test per conformance behaviour, grouped in modules by topic
/// (`publish::…`, `ack::…`, …), each running against `$harness` (an expression whose type
/// implements [`Harness`]; it is evaluated once per test). Each test runs on its own
/// current-thread tokio runtime, like `#[tokio::test]`.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_group!($harness; publish:
            publish_returns_one_result_per_message_in_order,
            pulled_message_is_what_was_published,
            acked_message_never_comes_back,
            acking_twice_is_applied_both_times,
            publish_validates_the_whole_batch_first,
            pull_returns_at_most_max,
            competing_pulls_do_not_share_leases,
            every_subscription_receives_every_message,
            long_poll_wakes_on_publish,
            long_poll_ends_when_its_wait_passes_on_the_clock,
            abandoned_long_poll_takes_nothing,
        );
        $crate::__conformance_group!($harness; ack:
            nack_with_delay_redelivers_after_the_delay,
            nack_with_zero_delay_redelivers_at_once,
            nack_without_delay_waits_the_backoff,
            extend_keeps_the_lease_from_now,
            extend_can_shorten_the_lease,
            expired_ack_id_is_rejected_individually,
            superseded_ack_id_is_rejected,
            malformed_ack_id_fails_the_whole_call,
            ack_id_of_another_subscription_acks_nothing,
            settle_arguments_are_validated,
            many_sparse_acks_survive_restart,
        );
        $crate::__conformance_group!($harness; redelivery:
            unacked_message_comes_back_after_deadline_and_backoff,
            redelivery_backoff_grows_with_each_attempt,
            long_poll_wakes_for_a_redelivery,
            long_poll_wakes_for_a_nacked_message,
        );
        $crate::__conformance_group!($harness; dead_letter:
            expired_last_delivery_is_dead_lettered,
            nack_of_last_delivery_dead_letters_at_once,
            without_dead_letter_topic_the_message_is_dropped,
            redrive_moves_dead_letters_back,
            redrive_skips_what_it_may_not_move,
            dead_letter_topic_must_exist,
        );
        $crate::__conformance_group!($harness; delay:
            delayed_message_is_invisible_until_its_time,
            long_poll_wakes_for_a_delayed_message,
            delayed_message_survives_restart,
            deliver_at_is_limited_to_max_delay,
            deliver_at_in_the_past_is_no_delay,
        );
        $crate::__conformance_group!($harness; dedup:
            repeated_dedup_id_returns_the_first_result,
            repeated_dedup_id_within_one_batch,
            dedup_survives_restart,
            dedup_id_is_new_again_after_the_window,
            dedup_ids_are_per_topic,
        );
        $crate::__conformance_group!($harness; ordering:
            same_key_goes_to_the_same_partition,
            keyless_messages_spread_over_partitions,
            ordered_key_waits_for_the_previous_message,
            ordered_delivery_follows_publish_order_per_key,
            ordered_keys_stay_blocked_across_restart,
            ordered_key_moves_on_after_dead_lettering,
            unordered_subscription_hands_out_a_key_at_once,
            ack_of_an_ordered_key_wakes_a_waiting_pull,
        );
        $crate::__conformance_group!($harness; filter:
            filter_delivers_only_matching_messages,
            filter_survives_restart,
        );
        $crate::__conformance_group!($harness; seek:
            earliest_sees_history_and_latest_does_not,
            time_starts_at_the_first_message_at_or_after_it,
            offset_starts_there_clamped_to_the_partition,
            seek_back_redelivers_acked_messages,
            seek_forward_skips_and_voids_leases,
            seek_on_missing_subscription_is_not_found,
        );
        $crate::__conformance_group!($harness; retention:
            partition_stats_follow_publishes,
            invalid_topic_settings_are_refused,
            retention_settings_are_stored,
        );
        $crate::__conformance_group!($harness; stats:
            subscription_stats_follow_a_scripted_sequence,
            in_flight_counts_only_live_leases,
            backlog_bytes_count_payload_bytes,
            topic_stats_count_publishes_duplicates_and_scheduled,
            delayed_message_counts_as_published_at_once,
        );
        $crate::__conformance_group!($harness; restart:
            messages_survive_restart,
            acks_survive_restart_and_leases_come_back,
            nack_survives_restart,
            dead_lettering_survives_restart,
            settings_survive_restart,
            create_finds_existing_and_conflicts_on_other_settings,
            invalid_subscription_settings_are_refused,
            missing_resources_are_not_found,
            close_wakes_pulls_and_refuses_writes,
            admin_key_hash_survives_restart,
        );
        $crate::__conformance_group!($harness; manage:
            topic_update_checks_the_revision,
            topic_delete_refuses_while_used,
            subscription_delete_forgets_its_state,
            subscription_update_keeps_the_position,
            lists_are_ordered_and_paged,
            lists_for_one_app_hold_only_its_resources,
            browsing_reads_without_consuming,
        );
        $crate::__conformance_group!($harness; push:
            attempts_are_listed_newest_first_and_filtered,
            attempts_older_than_a_week_are_dropped,
            attempts_go_with_their_subscription,
            subscription_changes_are_announced,
            resends_are_queued_due_and_settled,
            a_resend_queued_twice_waits_once,
            resends_survive_restart,
            resends_go_with_their_subscription,
            a_resend_is_not_due_before_its_time,
        );
        $crate::__conformance_group!($harness; tasks:
            a_task_is_followed_from_publish_to_result,
            a_stale_ack_stores_no_result,
            a_dead_lettered_task_tells_its_callback,
            owed_callbacks_are_told_after_a_restart,
            a_delayed_task_keeps_its_callback,
        );
    };
}

/// One module of conformance tests; an implementation detail of [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_group {
    ($harness:expr; $group:ident: $($name:ident),+ $(,)?) => {
        mod $group {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::conformance::support::run(async {
                        let harness = $harness;
                        $crate::conformance::$group::$name(&harness).await;
                    });
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    /// Every behaviour of every topic file is listed in `conformance_tests!`, so none is
    /// silently left out of a backend's run.
    #[test]
    fn every_behaviour_is_in_the_macro() {
        let files = [
            ("publish", include_str!("publish.rs")),
            ("ack", include_str!("ack.rs")),
            ("redelivery", include_str!("redelivery.rs")),
            ("dead_letter", include_str!("dead_letter.rs")),
            ("delay", include_str!("delay.rs")),
            ("dedup", include_str!("dedup.rs")),
            ("ordering", include_str!("ordering.rs")),
            ("filter", include_str!("filter.rs")),
            ("seek", include_str!("seek.rs")),
            ("retention", include_str!("retention.rs")),
            ("stats", include_str!("stats.rs")),
            ("restart", include_str!("restart.rs")),
            ("manage", include_str!("manage.rs")),
            ("push", include_str!("push.rs")),
            ("tasks", include_str!("tasks.rs")),
        ];
        let this = include_str!("mod.rs");
        let listed = this
            .split_once("macro_rules! conformance_tests")
            .expect("the macro")
            .1;
        for (group, source) in files {
            for line in source.lines() {
                let Some(rest) = line.strip_prefix("pub async fn ") else {
                    continue;
                };
                let name = rest.split('(').next().expect("a name");
                assert!(
                    listed.contains(&format!("{group}:")) && listed.contains(&format!(" {name},")),
                    "{group}::{name} is missing from conformance_tests!"
                );
            }
        }
    }
}
