//! The sales policy: which products agents may sell, to which agents, and up to what order amount. It travels in
//! the rules bundle (`sales_policy`), so every process applies the version complete checks, and a refusal is a
//! session message (never an item silently dropped).
//!
//! Precedence for an item: the product's own rule, else the most specific category rule matching the variant's
//! category (the feed's first category; a rule for `A > B` matches `A > B` and `A > B > C`), else allowed.
//! `excluded_categories` are category rules that refuse with `unsupported`. A product's `allowed_agents`, when
//! given, also refuses every other agent.

use serde::{Deserialize, Serialize};

/// The message code a refused item shows, as fits the reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    #[default]
    Unsupported,
    RegionRestricted,
    AgeVerificationRequired,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::Unsupported => "unsupported",
            Self::RegionRestricted => "region_restricted",
            Self::AgeVerificationRequired => "age_verification_required",
        }
    }

    /// What the buyer reads, for an item titled `title`.
    pub fn content(self, title: &str) -> String {
        match self {
            Self::Unsupported => {
                format!("'{title}' cannot be bought through an AI agent; it is sold on the store's own site.")
            }
            Self::RegionRestricted => format!("'{title}' cannot be sold through this channel where you are."),
            Self::AgeVerificationRequired => {
                format!("'{title}' needs an age check this checkout cannot do; it is sold on the store's own site.")
            }
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductPolicy {
    pub product_id: String,
    #[serde(default = "yes")]
    pub agent_purchasable: bool,
    /// Only these agents may sell the product; `None`: every agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_agents: Option<Vec<String>>,
    #[serde(default)]
    pub reason: Refusal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryPolicy {
    /// A category path as the feed writes it (`Outdoor > Knives`).
    pub category: String,
    #[serde(default = "yes")]
    pub agent_purchasable: bool,
    #[serde(default)]
    pub reason: Refusal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLimit {
    pub agent_id: String,
    /// The largest order total this agent may place, in minor units of the bundle's currency.
    pub max_order_amount: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesPolicy {
    #[serde(default)]
    pub products: Vec<ProductPolicy>,
    #[serde(default)]
    pub categories: Vec<CategoryPolicy>,
    #[serde(default)]
    pub excluded_categories: Vec<String>,
    #[serde(default)]
    pub agent_limits: Vec<AgentLimit>,
}

/// Whether `category` is `rule` or lies under it.
fn within(category: &str, rule: &str) -> bool {
    let (category, rule) = (category.trim(), rule.trim());
    category.eq_ignore_ascii_case(rule)
        || category
            .get(..rule.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(rule) && category[rule.len()..].trim_start().starts_with('>'))
}

impl SalesPolicy {
    /// No rule at all (the bundle then leaves the policy out).
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
            && self.categories.is_empty()
            && self.excluded_categories.is_empty()
            && self.agent_limits.is_empty()
    }

    /// Why `agent_id` may not sell the variant of `product_id` in `category`, if it may not.
    pub fn refusal(&self, agent_id: &str, product_id: &str, category: Option<&str>) -> Option<Refusal> {
        if let Some(p) = self.products.iter().find(|p| p.product_id == product_id) {
            if !p.agent_purchasable {
                return Some(p.reason);
            }
            if p.allowed_agents
                .as_ref()
                .is_some_and(|agents| !agents.iter().any(|a| a == agent_id))
            {
                return Some(Refusal::Unsupported);
            }
            return None;
        }
        let category = category?;
        let rules = self
            .categories
            .iter()
            .map(|c| (c.category.as_str(), c.agent_purchasable, c.reason))
            .chain(
                self.excluded_categories
                    .iter()
                    .map(|c| (c.as_str(), false, Refusal::Unsupported)),
            );
        rules
            .filter(|(rule, _, _)| within(category, rule))
            .max_by_key(|(rule, _, _)| rule.trim().len())
            .and_then(|(_, purchasable, reason)| (!purchasable).then_some(reason))
    }

    /// The largest order total `agent_id` may place, when limited.
    pub fn max_order_amount(&self, agent_id: &str) -> Option<i64> {
        self.agent_limits
            .iter()
            .find(|l| l.agent_id == agent_id)
            .map(|l| l.max_order_amount)
    }

    /// The first problem, as a JSONPath inside the bundle and what is wrong there.
    pub fn problem(&self) -> Option<(String, &'static str)> {
        let at = "$.sales_policy";
        for (i, p) in self.products.iter().enumerate() {
            if p.product_id.trim().is_empty() {
                return Some((format!("{at}.products[{i}].product_id"), "must not be empty"));
            }
            if p.allowed_agents
                .as_ref()
                .is_some_and(|a| a.iter().any(|id| id.trim().is_empty()))
            {
                return Some((
                    format!("{at}.products[{i}].allowed_agents"),
                    "agent ids must not be empty",
                ));
            }
        }
        for (i, c) in self.categories.iter().enumerate() {
            if c.category.trim().is_empty() {
                return Some((format!("{at}.categories[{i}].category"), "must not be empty"));
            }
        }
        if let Some(i) = self.excluded_categories.iter().position(|c| c.trim().is_empty()) {
            return Some((format!("{at}.excluded_categories[{i}]"), "must not be empty"));
        }
        for (i, l) in self.agent_limits.iter().enumerate() {
            if l.agent_id.trim().is_empty() {
                return Some((format!("{at}.agent_limits[{i}].agent_id"), "must not be empty"));
            }
            if l.max_order_amount <= 0 {
                return Some((format!("{at}.agent_limits[{i}].max_order_amount"), "must be positive"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SalesPolicy {
        serde_json::from_value(serde_json::json!({
            "products": [
                {"product_id": "knife", "agent_purchasable": false, "reason": "age_verification_required"},
                {"product_id": "vip", "allowed_agents": ["agent_a"]},
                {"product_id": "allowed_tool", "agent_purchasable": true}],
            "categories": [
                {"category": "Outdoor > Tools", "agent_purchasable": false, "reason": "region_restricted"},
                {"category": "Outdoor > Tools > Spoons", "agent_purchasable": true}],
            "excluded_categories": ["Gift cards"],
            "agent_limits": [{"agent_id": "agent_a", "max_order_amount": 50000}],
        }))
        .expect("a policy")
    }

    #[test]
    fn the_product_rule_comes_first_then_the_most_specific_category() {
        let p = policy();
        assert_eq!(
            p.refusal("agent_a", "knife", None),
            Some(Refusal::AgeVerificationRequired)
        );
        assert_eq!(p.refusal("agent_a", "vip", None), None);
        assert_eq!(p.refusal("agent_b", "vip", None), Some(Refusal::Unsupported));
        assert_eq!(p.refusal("agent_b", "allowed_tool", Some("Outdoor > Tools")), None);
        assert_eq!(
            p.refusal("agent_b", "saw", Some("outdoor > tools > saws")),
            Some(Refusal::RegionRestricted)
        );
        assert_eq!(p.refusal("agent_b", "spoon", Some("Outdoor > Tools > Spoons")), None);
        assert_eq!(
            p.refusal("agent_b", "card", Some("Gift cards")),
            Some(Refusal::Unsupported)
        );
        assert_eq!(
            p.refusal("agent_b", "toolbox", Some("Outdoor > Toolboxes")),
            None,
            "a prefix is not a parent"
        );
        assert_eq!(p.refusal("agent_b", "tee", None), None);
        assert_eq!(p.max_order_amount("agent_a"), Some(50000));
        assert_eq!(p.max_order_amount("agent_b"), None);
    }

    #[test]
    fn problems_name_their_place() {
        let mut p = policy();
        assert_eq!(p.problem(), None);
        p.agent_limits[0].max_order_amount = 0;
        assert_eq!(
            p.problem(),
            Some((
                "$.sales_policy.agent_limits[0].max_order_amount".into(),
                "must be positive"
            ))
        );
    }
}
