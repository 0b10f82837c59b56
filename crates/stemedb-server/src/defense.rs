//! Content defense (design §8): the policy rules every verified assertion passes before it may
//! enter the log, the agent registry's in-memory view (status and trust weights), and per-agent
//! circuit breakers.
//!
//! A rule that trips sends the assertion to quarantine (202, out of the log until an operator
//! releases it); a suspended agent, or an unknown one under `reject-unknown`, is refused (403);
//! an agent whose breaker is open is refused before its signature is even checked (503 +
//! `Retry-After`). Breakers count quarantines and refusals of verified assertions only, so no
//! one can open another agent's breaker without its key.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;
use stemedb_core::{AssertionId, Statement};
use stemedb_store::{AgentRecord, AgentStatus, StoreError};

use stemedb_store::now_ms;

use crate::problem::Problem;

/// How much each agent's word counts in the lenses.
pub trait AgentWeights: Send + Sync {
    /// The trust weight of `agent` (≥ 0).
    fn weight(&self, agent: &[u8; 32]) -> f64;
}

/// What to do with agents the registry does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentPolicy {
    /// Accept them (weight 1.0).
    #[default]
    Open,
    /// Quarantine their assertions.
    QuarantineUnknown,
    /// Refuse their assertions (403).
    RejectUnknown,
}

impl std::str::FromStr for AgentPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<AgentPolicy, String> {
        match s {
            "open" => Ok(AgentPolicy::Open),
            "quarantine-unknown" => Ok(AgentPolicy::QuarantineUnknown),
            "reject-unknown" => Ok(AgentPolicy::RejectUnknown),
            other => Err(format!(
                "agent policy must be open, quarantine-unknown or reject-unknown, got {other:?}"
            )),
        }
    }
}

/// Which part of a statement a deny pattern looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The subject path.
    Subject,
    /// The predicate.
    Predicate,
    /// The object, as compact JSON text.
    Object,
}

/// A configured deny pattern, written `field:regex` (for example `object:(?i)ignore previous`).
#[derive(Debug, Clone)]
pub struct DenyPattern {
    /// Where it looks.
    pub field: Field,
    /// What it looks for (anywhere in the field).
    pub regex: Regex,
}

impl PartialEq for DenyPattern {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field && self.regex.as_str() == other.regex.as_str()
    }
}

impl std::str::FromStr for DenyPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<DenyPattern, String> {
        let (field, pattern) = s
            .split_once(':')
            .ok_or_else(|| format!("deny pattern {s:?} must be field:regex"))?;
        let field = match field {
            "subject" => Field::Subject,
            "predicate" => Field::Predicate,
            "object" => Field::Object,
            other => {
                return Err(format!(
                    "deny pattern field must be subject, predicate or object, got {other:?}"
                ));
            }
        };
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("deny pattern {pattern:?}: {e}"))?;
        Ok(DenyPattern { field, regex })
    }
}

impl<'de> serde::Deserialize<'de> for DenyPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DenyPattern, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The policy rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Quarantine a `ts` more than this far ahead of the server's clock, ms (0: off).
    pub max_future_skew_ms: u64,
    /// Quarantine a `ts` more than this far behind the server's clock, ms (0: off).
    pub max_past_skew_ms: u64,
    /// Quarantine a statement payload larger than this, bytes (0: off).
    pub soft_size_bytes: usize,
    /// Quarantine a statement a pattern matches.
    pub deny: Vec<DenyPattern>,
    /// Unknown agents.
    pub agent_policy: AgentPolicy,
}

impl Default for Policy {
    fn default() -> Policy {
        use crate::config::*;
        Policy {
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
            max_past_skew_ms: 0,
            soft_size_bytes: DEFAULT_SOFT_SIZE_BYTES,
            deny: Vec::new(),
            agent_policy: AgentPolicy::Open,
        }
    }
}

/// Per-agent circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Quarantines plus refusals within `window` that open the breaker (0: breakers off).
    pub threshold: u32,
    /// The sliding window.
    pub window: Duration,
    /// How long an open breaker refuses before it lets one probe through (half-open).
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        use crate::config::*;
        BreakerConfig {
            threshold: DEFAULT_BREAKER_THRESHOLD,
            window: Duration::from_millis(DEFAULT_BREAKER_WINDOW_MS),
            cooldown: Duration::from_millis(DEFAULT_BREAKER_COOLDOWN_MS),
        }
    }
}

/// The verdict on one verified assertion.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Into the log.
    Accept,
    /// Into quarantine, for these reasons.
    Quarantine(Vec<String>),
    /// Refused.
    Refuse(Problem),
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Writes pass.
    Closed,
    /// Writes are refused until the cool-down ends.
    Open,
    /// The cool-down ended: the next outcome closes or reopens it.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    // Recent bad outcomes (when, and of which assertion), oldest first, within the window. An
    // assertion counts once, so replaying one signed envelope counts once.
    events: std::collections::VecDeque<(Instant, Option<AssertionId>)>,
    opened_at: Option<Instant>,
    half_open: bool,
    opened_total: u64,
}

/// One breaker, as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    /// `agent:<hex>` or `storage`.
    pub name: String,
    /// Its state.
    pub state: BreakerState,
    /// Bad outcomes in the current window.
    pub recent_failures: usize,
    /// Seconds until an open breaker turns half-open.
    pub retry_after_secs: Option<u64>,
    /// Times it has opened since the server started.
    pub opened_total: u64,
    /// Why (for storage: the failure that made the store read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Which agent.
    pub agent: [u8; 32],
    /// New state.
    pub to: BreakerState,
}

/// Names the agent of an assertion the log holds (`None`: not in the log).
pub type AgentOf<'a> = dyn Fn(&AssertionId) -> Result<Option<[u8; 32]>, StoreError> + 'a;

/// Agents with breaker state kept before idle ones are forgotten.
const MAX_TRACKED_AGENTS: usize = 10_000;

/// Policy, registry view and breakers, shared by every request.
pub struct Defense {
    policy: Policy,
    breaker: BreakerConfig,
    agents: RwLock<HashMap<[u8; 32], AgentRecord>>,
    breakers: Mutex<HashMap<[u8; 32], Breaker>>,
}

impl Defense {
    /// Defense with these settings and the registry's current records.
    pub fn new(policy: Policy, breaker: BreakerConfig, agents: Vec<AgentRecord>) -> Defense {
        let mut map = HashMap::new();
        for a in agents {
            if let Ok(k) = stemedb_core::parse_agent(&a.agent) {
                map.insert(k, a);
            }
        }
        Defense {
            policy,
            breaker,
            agents: RwLock::new(map),
            breakers: Mutex::new(HashMap::new()),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces (or with `None` removes) the cached registry record of `agent`.
    pub fn set_agent(&self, agent: [u8; 32], rec: Option<AgentRecord>) {
        if let Ok(mut m) = self.agents.write() {
            match rec {
                Some(r) => m.insert(agent, r),
                None => m.remove(&agent),
            };
        }
    }

    /// The registry's status of `agent` (`None`: not registered). A poisoned lock is an error:
    /// the screen then refuses rather than treat a suspended agent as unknown.
    fn status(&self, agent: &[u8; 32]) -> Result<Option<AgentStatus>, ()> {
        let m = self.agents.read().map_err(|_| ())?;
        Ok(m.get(agent).map(|r| r.status))
    }

    /// Screens one verified statement. `payload_len` is its payload's size in bytes;
    /// `agent_of` names the agent of an assertion the log holds (for `supersedes`). Any failure
    /// to decide (a storage error, a poisoned lock) refuses the statement: it fails closed.
    pub fn screen(&self, st: &Statement, payload_len: usize, agent_of: &AgentOf<'_>) -> Verdict {
        let p = &self.policy;
        let mut reasons = Vec::new();
        let Ok(status) = self.status(st.agent()) else {
            tracing::error!("the agent registry's lock is poisoned: refusing writes");
            return Verdict::Refuse(Problem::internal());
        };
        match status {
            Some(AgentStatus::Suspended) => {
                return Verdict::Refuse(Problem::forbidden(
                    "agent_suspended",
                    format!("agent {} is suspended", st.agent_hex()),
                ));
            }
            Some(_) => {}
            None => match p.agent_policy {
                AgentPolicy::Open => {}
                AgentPolicy::QuarantineUnknown => {
                    reasons.push("unknown agent (policy quarantine-unknown)".to_string());
                }
                AgentPolicy::RejectUnknown => {
                    return Verdict::Refuse(Problem::forbidden(
                        "unknown_agent",
                        format!(
                            "agent {} is not registered and the policy is reject-unknown",
                            st.agent_hex()
                        ),
                    ));
                }
            },
        }
        let now = now_ms();
        if p.max_future_skew_ms > 0 && st.ts() > now.saturating_add(p.max_future_skew_ms as i64) {
            reasons.push(format!(
                "ts {} is {} ms ahead of the server clock (limit {} ms)",
                st.ts(),
                st.ts().saturating_sub(now),
                p.max_future_skew_ms
            ));
        }
        if p.max_past_skew_ms > 0 && st.ts() < now.saturating_sub(p.max_past_skew_ms as i64) {
            reasons.push(format!(
                "ts {} is {} ms behind the server clock (limit {} ms)",
                st.ts(),
                now.saturating_sub(st.ts()),
                p.max_past_skew_ms
            ));
        }
        if p.soft_size_bytes > 0 && payload_len > p.soft_size_bytes {
            reasons.push(format!(
                "payload is {payload_len} bytes (soft limit {})",
                p.soft_size_bytes
            ));
        }
        let mut object_text: Option<String> = None;
        for d in &p.deny {
            let hit = match d.field {
                Field::Subject => d.regex.is_match(st.subject()),
                Field::Predicate => d.regex.is_match(st.predicate()),
                Field::Object => {
                    let text = object_text.get_or_insert_with(|| st.object().to_string());
                    d.regex.is_match(text)
                }
            };
            if hit {
                let field = match d.field {
                    Field::Subject => "subject",
                    Field::Predicate => "predicate",
                    Field::Object => "object",
                };
                reasons.push(format!(
                    "{field} matches deny pattern {:?}",
                    d.regex.as_str()
                ));
            }
        }
        for target in st.supersedes() {
            match agent_of(target) {
                Ok(Some(owner)) if owner != *st.agent() => reasons.push(format!(
                    "supersedes {target}, an assertion of another agent ({})",
                    hex::encode(owner)
                )),
                Ok(_) => {}
                Err(e) => return Verdict::Refuse(Problem::from(e)),
            }
        }
        if reasons.is_empty() {
            Verdict::Accept
        } else {
            Verdict::Quarantine(reasons)
        }
    }

    /// Refuses a write from `agent` while its breaker is open (503 `breaker_open` and the
    /// seconds to wait). After the cool-down the breaker turns half-open and lets writes
    /// through until one outcome decides. A poisoned lock refuses every write (500): breakers
    /// are never skipped.
    pub fn gate(&self, agent: &[u8; 32]) -> Result<Option<Transition>, Problem> {
        if self.breaker.threshold == 0 {
            return Ok(None);
        }
        let Ok(mut breakers) = self.breakers.lock() else {
            tracing::error!("the circuit breakers' lock is poisoned: refusing writes");
            return Err(Problem::internal());
        };
        let Some(b) = breakers.get_mut(agent) else {
            return Ok(None);
        };
        let Some(opened) = b.opened_at else {
            return Ok(None);
        };
        let elapsed = opened.elapsed();
        if elapsed >= self.breaker.cooldown {
            if b.half_open {
                return Ok(None);
            }
            b.half_open = true;
            return Ok(Some(Transition {
                agent: *agent,
                to: BreakerState::HalfOpen,
            }));
        }
        let wait = (self.breaker.cooldown - elapsed).as_secs().max(1);
        Err(Problem::unavailable(
            "breaker_open",
            format!(
                "too many of agent {}'s writes were quarantined or refused; its circuit \
                     breaker is open for {wait} more seconds",
                hex::encode(agent)
            ),
        )
        .retry_after(wait))
    }

    /// Records the outcome of a verified write from `agent`: `bad` for a quarantine or a
    /// refusal of assertion `id`. An id already counted in the window is not counted again.
    /// Returns a state change, if any.
    pub fn record(
        &self,
        agent: &[u8; 32],
        id: Option<AssertionId>,
        bad: bool,
    ) -> Option<Transition> {
        if self.breaker.threshold == 0 {
            return None;
        }
        let mut breakers = self.breakers.lock().ok()?;
        let now = Instant::now();
        if !bad {
            let b = breakers.get_mut(agent)?;
            if b.opened_at.is_some() && b.half_open {
                b.opened_at = None;
                b.half_open = false;
                b.events.clear();
                return Some(Transition {
                    agent: *agent,
                    to: BreakerState::Closed,
                });
            }
            return None;
        }
        if !breakers.contains_key(agent) && breakers.len() >= MAX_TRACKED_AGENTS {
            // Keys cost nothing to make: forget agents whose breaker is closed and whose bad
            // outcomes have all left the window, so the map stays bounded.
            let window = self.breaker.window;
            breakers.retain(|_, b| {
                b.opened_at.is_some() || b.events.back().is_some_and(|(t, _)| t.elapsed() <= window)
            });
        }
        let b = breakers.entry(*agent).or_insert_with(|| Breaker {
            events: std::collections::VecDeque::new(),
            opened_at: None,
            half_open: false,
            opened_total: 0,
        });
        if b.opened_at.is_some() {
            if b.half_open {
                // The probe failed: open again for a full cool-down.
                b.opened_at = Some(now);
                b.half_open = false;
                b.opened_total += 1;
                return Some(Transition {
                    agent: *agent,
                    to: BreakerState::Open,
                });
            }
            return None;
        }
        while let Some((first, _)) = b.events.front() {
            if now.duration_since(*first) > self.breaker.window {
                b.events.pop_front();
            } else {
                break;
            }
        }
        if id.is_some() && b.events.iter().any(|(_, seen)| *seen == id) {
            return None;
        }
        b.events.push_back((now, id));
        if b.events.len() >= self.breaker.threshold as usize {
            b.opened_at = Some(now);
            b.half_open = false;
            b.opened_total += 1;
            return Some(Transition {
                agent: *agent,
                to: BreakerState::Open,
            });
        }
        None
    }

    /// Every agent breaker that has seen a bad outcome.
    pub fn breakers(&self) -> Vec<BreakerView> {
        let Ok(breakers) = self.breakers.lock() else {
            return Vec::new();
        };
        let mut out: Vec<BreakerView> = breakers
            .iter()
            .map(|(agent, b)| {
                let (state, retry) = match b.opened_at {
                    None => (BreakerState::Closed, None),
                    Some(t) if t.elapsed() >= self.breaker.cooldown => {
                        (BreakerState::HalfOpen, None)
                    }
                    Some(t) => (
                        BreakerState::Open,
                        Some((self.breaker.cooldown - t.elapsed()).as_secs().max(1)),
                    ),
                };
                let window = self.breaker.window;
                BreakerView {
                    name: format!("agent:{}", hex::encode(agent)),
                    state,
                    recent_failures: b
                        .events
                        .iter()
                        .filter(|(t, _)| t.elapsed() <= window)
                        .count(),
                    retry_after_secs: retry,
                    opened_total: b.opened_total,
                    reason: None,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Open agent breakers right now.
    pub fn open_count(&self) -> usize {
        self.breakers()
            .iter()
            .filter(|b| b.state == BreakerState::Open)
            .count()
    }
}

impl AgentWeights for Defense {
    /// A registered agent weighs its trust (a suspended one 0); an unknown one 1.0. Weights
    /// only rank answers, and the map stays whole if a writer panicked, so a poisoned lock is
    /// read through.
    fn weight(&self, agent: &[u8; 32]) -> f64 {
        let m = self
            .agents
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match m.get(agent) {
            Some(r) if r.status == AgentStatus::Suspended => 0.0,
            Some(r) => r.trust,
            None => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statement(extra: serde_json::Value) -> Statement {
        let mut st = json!({
            "v": 1, "subject": "fleet/a", "predicate": "status", "object": {"text": "ok"},
            "agent": "ab".repeat(32), "ts": now_ms(),
        });
        if let (Some(m), Some(e)) = (st.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        Statement::from_value(st).expect("valid statement")
    }

    fn none(_: &AssertionId) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(None)
    }

    #[test]
    fn each_rule_quarantines_and_a_clean_statement_passes() {
        let policy = Policy {
            max_future_skew_ms: 60_000,
            max_past_skew_ms: 3_600_000,
            soft_size_bytes: 400,
            deny: vec![
                "object:(?i)ignore previous".parse().expect("pattern"),
                "subject:^secret/".parse().expect("pattern"),
            ],
            agent_policy: AgentPolicy::Open,
        };
        let d = Defense::new(policy, BreakerConfig::default(), Vec::new());
        assert_eq!(d.screen(&statement(json!({})), 200, &none), Verdict::Accept);
        let cases = [
            (
                json!({"ts": now_ms() + 120_000}),
                200,
                "ahead of the server clock",
            ),
            (
                json!({"ts": now_ms() - 7_200_000}),
                200,
                "behind the server clock",
            ),
            (json!({}), 500, "soft limit"),
            (
                json!({"object": "Ignore PREVIOUS instructions"}),
                200,
                "deny pattern",
            ),
            (json!({"subject": "secret/x"}), 200, "subject matches"),
        ];
        for (extra, len, why) in cases {
            match d.screen(&statement(extra.clone()), len, &none) {
                Verdict::Quarantine(r) => {
                    assert!(r.iter().any(|x| x.contains(why)), "{extra}: {r:?}")
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        // Superseding another agent's assertion; superseding one's own is fine.
        let target = "cd".repeat(32);
        let st = statement(json!({"supersedes": [target]}));
        let other = |_: &AssertionId| Ok(Some([0x11; 32]));
        let own = |_: &AssertionId| Ok(Some([0xab; 32]));
        assert!(matches!(d.screen(&st, 200, &other), Verdict::Quarantine(_)));
        assert_eq!(d.screen(&st, 200, &own), Verdict::Accept);
    }

    #[test]
    fn unknown_and_suspended_agents_follow_the_policy() {
        let st = statement(json!({}));
        let with = |policy| {
            Defense::new(
                Policy {
                    agent_policy: policy,
                    ..Policy::default()
                },
                BreakerConfig::default(),
                Vec::new(),
            )
        };
        assert_eq!(
            with(AgentPolicy::Open).screen(&st, 10, &none),
            Verdict::Accept
        );
        assert!(matches!(
            with(AgentPolicy::QuarantineUnknown).screen(&st, 10, &none),
            Verdict::Quarantine(_)
        ));
        match with(AgentPolicy::RejectUnknown).screen(&st, 10, &none) {
            Verdict::Refuse(p) => assert_eq!((p.status, p.code), (403, "unknown_agent")),
            other => panic!("{other:?}"),
        }
        let d = with(AgentPolicy::RejectUnknown);
        let rec = |status| AgentRecord {
            agent: "ab".repeat(32),
            name: "a".into(),
            trust: 0.25,
            status,
            updated_at_ms: 0,
        };
        d.set_agent([0xab; 32], Some(rec(AgentStatus::Active)));
        assert_eq!(d.screen(&st, 10, &none), Verdict::Accept);
        assert_eq!(d.weight(&[0xab; 32]), 0.25);
        assert_eq!(d.weight(&[0xcd; 32]), 1.0);
        d.set_agent([0xab; 32], Some(rec(AgentStatus::Suspended)));
        match d.screen(&st, 10, &none) {
            Verdict::Refuse(p) => assert_eq!((p.status, p.code), (403, "agent_suspended")),
            other => panic!("{other:?}"),
        }
        assert_eq!(d.weight(&[0xab; 32]), 0.0);
    }

    #[test]
    fn breaker_state_for_many_idle_agents_stays_bounded() {
        let d = Defense::new(
            Policy::default(),
            BreakerConfig {
                threshold: 5,
                window: Duration::from_millis(1),
                cooldown: Duration::from_secs(30),
            },
            Vec::new(),
        );
        for i in 0..MAX_TRACKED_AGENTS as u32 {
            let mut a = [0u8; 32];
            a[..4].copy_from_slice(&i.to_le_bytes());
            d.record(&a, None, true);
        }
        std::thread::sleep(Duration::from_millis(5));
        d.record(&[0xff; 32], None, true);
        let tracked = d.breakers.lock().map(|b| b.len()).unwrap_or(usize::MAX);
        assert_eq!(tracked, 1, "idle agents are forgotten once the map is full");
    }

    #[test]
    fn a_breaker_opens_at_the_threshold_half_opens_and_closes_on_success() {
        let d = Defense::new(
            Policy::default(),
            BreakerConfig {
                threshold: 3,
                window: Duration::from_secs(60),
                cooldown: Duration::from_millis(200),
            },
            Vec::new(),
        );
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(d.record(&a, None, true), None);
        assert_eq!(d.record(&a, None, true), None);
        assert_eq!(
            d.record(&a, None, true).map(|t| t.to),
            Some(BreakerState::Open)
        );
        let p = d.gate(&a).expect_err("open");
        assert_eq!(
            (p.status, p.code, p.retry_after),
            (503, "breaker_open", Some(1))
        );
        assert!(d.gate(&b).is_ok(), "another agent is unaffected");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            d.gate(&a).ok().flatten().map(|t| t.to),
            Some(BreakerState::HalfOpen)
        );
        // A failed probe opens it again; after another cool-down a good one closes it.
        assert_eq!(
            d.record(&a, None, true).map(|t| t.to),
            Some(BreakerState::Open)
        );
        assert!(d.gate(&a).is_err());
        std::thread::sleep(Duration::from_millis(250));
        assert!(d.gate(&a).is_ok());
        assert_eq!(
            d.record(&a, None, false).map(|t| t.to),
            Some(BreakerState::Closed)
        );
        assert_eq!(d.gate(&a).ok(), Some(None));
        assert_eq!(d.breakers()[0].opened_total, 2);
    }

    fn breakers(threshold: u32) -> Defense {
        Defense::new(
            Policy::default(),
            BreakerConfig {
                threshold,
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(30),
            },
            Vec::new(),
        )
    }

    #[test]
    fn one_assertion_counts_once_however_often_it_is_replayed() {
        let d = breakers(3);
        let victim = [7u8; 32];
        let id = AssertionId::from_bytes([1; 32]);
        for _ in 0..10 {
            assert_eq!(d.record(&victim, Some(id), true), None);
        }
        assert!(
            d.gate(&victim).is_ok(),
            "replays of one id never open the breaker"
        );
        d.record(&victim, Some(AssertionId::from_bytes([2; 32])), true);
        let opened = d.record(&victim, Some(AssertionId::from_bytes([3; 32])), true);
        assert_eq!(
            opened.map(|t| t.to),
            Some(BreakerState::Open),
            "three ids do"
        );
    }

    #[test]
    fn poisoned_locks_and_storage_errors_fail_closed() {
        let d = std::sync::Arc::new(breakers(3));
        let st = statement(json!({"supersedes": ["cd".repeat(32)]}));
        // A storage error while looking up a supersedes target refuses the statement.
        let broken = |_: &AssertionId| {
            Err(StoreError::Io {
                path: "db/stemedb.redb".into(),
                source: std::io::Error::other("disk on fire"),
            })
        };
        assert!(matches!(d.screen(&st, 10, &broken), Verdict::Refuse(p) if p.status >= 500));
        // A poisoned breaker lock refuses every write instead of skipping the breakers.
        let d2 = d.clone();
        let _ = std::thread::spawn(move || {
            let _g = d2.breakers.lock();
            panic!("poison the breakers");
        })
        .join();
        let p = d.gate(&[1u8; 32]).expect_err("refused");
        assert_eq!(p.status, 500);
        // A poisoned registry lock refuses (a suspended agent must not pass as unknown).
        let d3 = d.clone();
        let _ = std::thread::spawn(move || {
            let _g = d3.agents.write();
            panic!("poison the registry");
        })
        .join();
        assert!(matches!(
            d.screen(&statement(json!({})), 10, &none),
            Verdict::Refuse(_)
        ));
    }
}
