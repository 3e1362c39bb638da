package api

import "time"

// PolicySet is the body of PUT /api/v1/policy: the policy file, YAML
// (docs/policy.md). An empty source clears the policy.
type PolicySet struct {
	Source string `json:"source"`
}

// PolicyRule is one rule of the fleet policy: its name, its effect
// ("allow" or "deny"), its CEL expression, and the line of the policy
// file it starts on.
type PolicyRule struct {
	Name        string `json:"name"`
	Effect      string `json:"effect"`
	Expr        string `json:"expr"`
	Description string `json:"description,omitempty"`
	Line        int    `json:"line"`
}

// Policy is the answer of GET and PUT /api/v1/policy: the fleet policy
// now in force. Version 0 (and no rules) when none was ever set; every
// change is a new version. Default is what applies when no rule matches
// ("allow" or "deny").
type Policy struct {
	Version int64        `json:"version"`
	Default string       `json:"default"`
	Rules   []PolicyRule `json:"rules"`
	Source  string       `json:"source"`
	SHA256  string       `json:"sha256,omitempty"`
	SetBy   string       `json:"set_by,omitempty"`
	SetAt   *time.Time   `json:"set_at,omitempty"`
}

// PolicyRuleResult is how one rule evaluated in an explanation: Matched
// when its expression was true; Error when it could not be evaluated
// (a deny rule that errs matches, an allow rule that errs does not).
type PolicyRuleResult struct {
	Rule    string `json:"rule"`
	Effect  string `json:"effect"`
	Matched bool   `json:"matched"`
	Error   string `json:"error,omitempty"`
}

// PolicyExplanation is the answer of GET /api/v1/policy/explain: whether
// the policy lets a device take a release, which rule decided (""
// when the default did), why, the rules evaluated in order up to the
// deciding one, and the inputs they saw.
type PolicyExplanation struct {
	Device        string             `json:"device"`
	Release       string             `json:"release"`
	PolicyVersion int64              `json:"policy_version"`
	Allowed       bool               `json:"allowed"`
	Decision      string             `json:"decision"`
	Rule          string             `json:"rule"`
	Reason        string             `json:"reason"`
	Trace         []PolicyRuleResult `json:"trace"`
	Input         map[string]any     `json:"input"`
}
