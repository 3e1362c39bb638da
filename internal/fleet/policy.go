package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"go.yaml.in/yaml/v3"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
)

// The fleet policy: named CEL rules over a device and a release, each
// allowing or denying, evaluated in the order of the policy file when
// the server decides to hand a device a rollout's release; the first
// rule whose expression is true decides, and when none is, the policy's
// default does (allow unless the file says "default: deny"). A rule
// that cannot be evaluated (over its cost limit, say) counts as true
// when it denies and false when it allows: an error never lets a device
// through. docs/policy.md has the file's syntax, the inputs and the
// shipped examples.
//
// The policy is stored as versioned documents of the metadata store
// (repo PolicyRepo, role PolicyRole): every change is a new version,
// audited. Each replica compiles a version once; its Step notices a
// newer one.

// Where the policy is kept in the metadata store.
const (
	PolicyRepo = "fleet"
	PolicyRole = "policy"
)

// Bounds of a policy file.
const (
	MaxPolicyBytes = 64 << 10
	MaxPolicyRules = 100
	maxRuleName    = 63
	maxDescription = 256
)

// policyRecheck is how often decisions that depend on the time (a
// release's age) are revisited: Step makes every device decide again
// this often while a policy is set.
const policyRecheck = time.Hour

var ruleNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// policyVars are the inputs of policy rules: the device (device.*, as
// selectors see it) and the release (release.*).
func policyVars() []cel.EnvOption {
	return []cel.EnvOption{
		cel.Variable("device.id", cel.StringType),
		cel.Variable("device.hardware", cel.StringType),
		cel.Variable("device.tags", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("device.version", cel.StringType),
		cel.Variable("device.security_version", cel.IntType),
		cel.Variable("device.risk", cel.StringType),
		// The device's last attestation result; "" until attestation
		// exists.
		cel.Variable("device.attestation", cel.StringType),
		cel.Variable("release.product", cel.StringType),
		cel.Variable("release.version", cel.StringType),
		cel.Variable("release.target", cel.StringType),
		cel.Variable("release.security_version", cel.IntType),
		cel.Variable("release.hardware", cel.ListType(cel.StringType)),
		cel.Variable("release.signers", cel.ListType(cel.StringType)),
		cel.Variable("release.signer_count", cel.IntType),
		cel.Variable("release.threshold", cel.IntType),
		cel.Variable("release.created", cel.TimestampType),
		cel.Variable("release.age", cel.DurationType),
		cel.Variable("release.age_days", cel.IntType),
		cel.Variable("release.critical", cel.BoolType),
		// Whether the release carries provenance; false until releases
		// can.
		cel.Variable("release.provenance", cel.BoolType),
	}
}

var policyEnv = sync.OnceValue(func() *cel.Env { return mustEnv(policyVars()...) })

// PolicyError is a policy file that is refused, with the 1-based line
// and column in the file of what is wrong.
type PolicyError struct {
	Line, Column int
	Msg          string
}

func (e *PolicyError) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Msg) }

// Rule is a compiled policy rule.
type Rule struct {
	Name, Effect, Expr, Description string
	Line, Column                    int
	prg                             cel.Program
}

// Policy is a compiled fleet policy.
type Policy struct {
	Rules []Rule
	// DefaultAllow is what applies when no rule matches.
	DefaultAllow bool
}

// ParsePolicy reads and compiles a policy file. An error is a
// *PolicyError with the position in the file: YAML that does not parse,
// a key that is unknown or given twice, a rule without a name or with
// both or neither of allow and deny, an expression that does not
// compile (its position inside the expression is mapped to the file).
func ParsePolicy(src []byte) (p *Policy, err error) {
	if len(src) > MaxPolicyBytes {
		return nil, &PolicyError{1, 1, fmt.Sprintf("the policy is %d bytes, more than %d", len(src), MaxPolicyBytes)}
	}
	p = &Policy{DefaultAllow: true}
	if len(bytes.TrimSpace(src)) == 0 {
		return p, nil
	}
	defer func() {
		// The parser must not bring the server down on hostile input.
		if r := recover(); r != nil {
			p, err = nil, &PolicyError{1, 1, fmt.Sprintf("the policy does not parse as YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return p, nil // comments only
	} else if err != nil {
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &PolicyError{extra.Line, extra.Column, "the policy is one YAML document; this starts a second"}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return p, nil
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return p, nil
	}
	lines := strings.Split(string(src), "\n")
	err = mapping(top, "the policy", map[string]func(*yaml.Node) error{
		"default": func(n *yaml.Node) error {
			if n.Kind != yaml.ScalarNode || (n.Value != "allow" && n.Value != "deny") {
				return posErr(n, "default must be allow or deny")
			}
			p.DefaultAllow = n.Value == "allow"
			return nil
		},
		"rules": func(n *yaml.Node) error {
			if n.Kind != yaml.SequenceNode {
				return posErr(n, "rules must be a list of rules (- name: ...)")
			}
			if len(n.Content) > MaxPolicyRules {
				return posErr(n.Content[MaxPolicyRules], fmt.Sprintf("more than %d rules", MaxPolicyRules))
			}
			seen := map[string]int{}
			for _, rn := range n.Content {
				r, err := parseRule(rn, lines)
				if err != nil {
					return err
				}
				if line, ok := seen[r.Name]; ok {
					return &PolicyError{r.Line, r.Column, fmt.Sprintf("rule %s is named twice (first on line %d)", r.Name, line)}
				}
				seen[r.Name] = r.Line
				p.Rules = append(p.Rules, r)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func parseRule(n *yaml.Node, lines []string) (Rule, error) {
	r := Rule{Line: n.Line, Column: n.Column}
	var exprNode *yaml.Node
	effect := func(name string) func(*yaml.Node) error {
		return func(v *yaml.Node) error {
			if exprNode != nil {
				return posErr(v, "a rule has one of allow and deny, not both")
			}
			if v.Kind != yaml.ScalarNode || strings.TrimSpace(v.Value) == "" {
				return posErr(v, name+" must be a CEL expression")
			}
			r.Effect, r.Expr, exprNode = name, v.Value, v
			return nil
		}
	}
	err := mapping(n, "a rule", map[string]func(*yaml.Node) error{
		"name": func(v *yaml.Node) error {
			if v.Kind != yaml.ScalarNode || !ruleNameRE.MatchString(v.Value) {
				return posErr(v, fmt.Sprintf("a rule's name is 1-%d of a-z 0-9 _ -, starting with a letter or digit", maxRuleName))
			}
			r.Name = v.Value
			return nil
		},
		"description": func(v *yaml.Node) error {
			if v.Kind != yaml.ScalarNode || len(v.Value) > maxDescription {
				return posErr(v, fmt.Sprintf("a description is text of at most %d bytes", maxDescription))
			}
			r.Description = v.Value
			return nil
		},
		"allow": effect("allow"),
		"deny":  effect("deny"),
	})
	if err != nil {
		return Rule{}, err
	}
	if r.Name == "" {
		return Rule{}, posErr(n, "a rule needs a name")
	}
	if exprNode == nil {
		return Rule{}, posErr(n, fmt.Sprintf("rule %s needs allow: EXPR or deny: EXPR", r.Name))
	}
	prg, err := compile(policyEnv(), r.Expr)
	if err != nil {
		var ee *ExprError
		if !errors.As(err, &ee) {
			return Rule{}, posErr(exprNode, fmt.Sprintf("rule %s: %v", r.Name, err))
		}
		line, col := exprPos(exprNode, lines, ee.Line, ee.Column)
		return Rule{}, &PolicyError{line, col, fmt.Sprintf("rule %s: %s", r.Name, ee.Msg)}
	}
	r.prg = prg
	return r, nil
}

// exprPos maps a position inside a scalar's value to the file: exactly
// for plain and literal block scalars, at the scalar's start (plus the
// column) for the others.
func exprPos(n *yaml.Node, lines []string, line, col int) (int, int) {
	switch n.Style {
	case 0: // plain
		if line == 1 {
			return n.Line, n.Column + col - 1
		}
	case yaml.SingleQuotedStyle, yaml.DoubleQuotedStyle:
		if line == 1 {
			return n.Line, n.Column + col // after the quote
		}
	case yaml.LiteralStyle:
		// The content starts on the line after the indicator, with
		// the block's indentation (its first line's) taken off.
		if n.Line < len(lines) {
			first := lines[n.Line]
			indent := len(first) - len(strings.TrimLeft(first, " "))
			return n.Line + line, indent + col
		}
	}
	return n.Line, n.Column
}

// mapping walks a YAML mapping: each key must be one of fields, given
// once.
func mapping(n *yaml.Node, what string, fields map[string]func(*yaml.Node) error) error {
	if n.Kind == yaml.AliasNode {
		return posErr(n, "aliases (*name) are not allowed in a policy")
	}
	if n.Kind != yaml.MappingNode {
		return posErr(n, what+" must be a mapping of keys to values")
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return posErr(k, "a key must be a plain word")
		}
		if line, ok := seen[k.Value]; ok {
			return posErr(k, fmt.Sprintf("key %q is given twice in %s (first on line %d)", k.Value, what, line))
		}
		seen[k.Value] = k.Line
		f, ok := fields[k.Value]
		if !ok {
			return posErr(k, fmt.Sprintf("unknown key %q in %s (known: %s)", k.Value, what, strings.Join(keysOf(fields), ", ")))
		}
		if v.Kind == yaml.AliasNode {
			return posErr(v, "aliases (*name) are not allowed in a policy")
		}
		if err := f(v); err != nil {
			return err
		}
	}
	return nil
}

func keysOf(m map[string]func(*yaml.Node) error) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func posErr(n *yaml.Node, msg string) error { return &PolicyError{n.Line, n.Column, msg} }

var yamlLineRE = regexp.MustCompile(`line (\d+)(?:, column (\d+))?: (.*)`)

// yamlError gives a YAML syntax error its position.
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		col, _ := strconv.Atoi(m[2])
		return &PolicyError{line, max(col, 1), "the policy does not parse as YAML: " + m[3]}
	}
	return &PolicyError{1, 1, "the policy does not parse as YAML: " + msg}
}

// Decision is what the policy says about a device and a release: the
// deciding rule ("" for the default) and the rules evaluated up to it.
type Decision struct {
	Allowed bool
	Rule    string
	Reason  string
	Trace   []api.PolicyRuleResult
}

// Decide evaluates the policy over the inputs (see Inputs).
func (p *Policy) Decide(in map[string]any) Decision {
	var trace []api.PolicyRuleResult
	for _, r := range p.Rules {
		res := api.PolicyRuleResult{Rule: r.Name, Effect: r.Effect}
		out, _, err := r.prg.Eval(in)
		switch {
		case err != nil:
			res.Error = err.Error()
			res.Matched = r.Effect == "deny"
		default:
			res.Matched = out == types.True
		}
		trace = append(trace, res)
		if !res.Matched {
			continue
		}
		d := Decision{Allowed: r.Effect == "allow", Rule: r.Name, Trace: trace}
		if res.Error != "" {
			d.Reason = fmt.Sprintf("deny rule %s (line %d) could not be evaluated (%s), so it denies", r.Name, r.Line, res.Error)
		} else {
			d.Reason = fmt.Sprintf("%s rule %s (line %d) matched: %s", r.Effect, r.Name, r.Line, r.Expr)
		}
		return d
	}
	d := Decision{Allowed: p.DefaultAllow, Trace: trace}
	def := "deny"
	if p.DefaultAllow {
		def = "allow"
	}
	d.Reason = fmt.Sprintf("no rule matched, so the default (%s) applies", def)
	if len(p.Rules) == 0 {
		d.Reason = fmt.Sprintf("the policy has no rules, so the default (%s) applies", def)
	}
	return d
}

// ReleaseFacts are the release's inputs that do not change with the
// time or the rollout.
type ReleaseFacts struct {
	Target, Product, Version string
	SecurityVersion          uint64
	Hardware                 []string
	Signers                  []string
	Threshold                int
	Created                  time.Time
}

// Inputs returns the activation of a policy rule: the device's and the
// release's inputs at now; critical is the rollout's flag.
func Inputs(d *store.Device, rel ReleaseFacts, critical bool, now time.Time) map[string]any {
	age := max(now.Sub(rel.Created), 0)
	if rel.Created.IsZero() {
		age = 0
	}
	return map[string]any{
		"device.id": d.ID, "device.hardware": d.HardwareID, "device.tags": newTagMap(d.Tags), "device.version": d.Version,
		"device.security_version": int64(d.SecurityVersion), "device.risk": Risk(d), "device.attestation": "",
		"release.product": rel.Product, "release.version": rel.Version, "release.target": rel.Target,
		"release.security_version": int64(rel.SecurityVersion), "release.hardware": rel.Hardware,
		"release.signers": rel.Signers, "release.signer_count": int64(len(rel.Signers)), "release.threshold": int64(rel.Threshold),
		"release.created": rel.Created, "release.age": age, "release.age_days": int64(age / (24 * time.Hour)),
		"release.critical": critical, "release.provenance": false,
	}
}

// plainInputs is the inputs as JSON shows them in an explanation.
func plainInputs(in map[string]any) map[string]any {
	out := make(map[string]any, len(in))
	for k, v := range in {
		switch v := v.(type) {
		case tagMap:
			out[k] = v.Value()
		case time.Duration:
			out[k] = v.String()
		default:
			out[k] = v
		}
	}
	return out
}

// policyState is a replica's compiled policy and the release inputs of
// the rollouts it offers.
type policyState struct {
	mu       sync.Mutex
	loaded   bool
	version  int64
	p        *Policy
	broken   string // why the stored version does not compile
	facts    map[string]ReleaseFacts
	lastBump time.Time
}

// storedPolicy is a policy version as stored.
type storedPolicy struct {
	Source string    `json:"source"`
	SetBy  string    `json:"set_by"`
	SetAt  time.Time `json:"set_at"`
}

// SetPolicy checks, compiles and stores a new version of the fleet
// policy with its audit entry; from the next check-in on, devices are
// decided by it. An error in the file is a *Refusal (400 bad-policy)
// whose message starts with "policy LINE:COLUMN:".
func (s *Service) SetPolicy(ctx context.Context, op Op, src string) (api.Policy, error) {
	p, err := ParsePolicy([]byte(src))
	if err != nil {
		return api.Policy{}, refuse(Invalid, api.BadPolicy, "policy %v", err)
	}
	sum := sha256.Sum256([]byte(src))
	var version int64
	err = s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		cur, err := tx.Doc(ctx, PolicyRepo, PolicyRole, 0)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return event{}, err
		}
		version = cur.Version + 1
		data, _ := json.Marshal(storedPolicy{Source: src, SetBy: op.Actor, SetAt: s.now().UTC()})
		if err := tx.PutDocs(ctx, store.Doc{Repo: PolicyRepo, Role: PolicyRole, Version: version, Data: data}); err != nil {
			return event{}, err
		}
		names := make([]string, len(p.Rules))
		for i, r := range p.Rules {
			names[i] = r.Effect + ":" + r.Name
		}
		def := "allow"
		if !p.DefaultAllow {
			def = "deny"
		}
		return event{op.Actor, "set-policy", "policy", "ok", map[string]string{
			"version": strconv.FormatInt(version, 10), "sha256": hex.EncodeToString(sum[:]),
			"rules": strings.Join(names, ","), "default": def}}, nil
	})
	if err != nil {
		return api.Policy{}, err
	}
	s.pol.mu.Lock()
	s.pol.loaded, s.pol.version, s.pol.p, s.pol.broken = true, version, p, ""
	s.pol.mu.Unlock()
	s.bump() // every device decides again under the new policy
	return s.ShowPolicy(ctx)
}

// ShowPolicy returns the policy in force.
func (s *Service) ShowPolicy(ctx context.Context) (api.Policy, error) {
	out := api.Policy{Default: "allow", Rules: []api.PolicyRule{}}
	doc, err := s.store.Doc(ctx, PolicyRepo, PolicyRole, 0)
	if errors.Is(err, store.ErrNotFound) {
		return out, nil
	} else if err != nil {
		return api.Policy{}, err
	}
	var sp storedPolicy
	if err := json.Unmarshal(doc.Data, &sp); err != nil {
		return api.Policy{}, fmt.Errorf("stored policy version %d: %w", doc.Version, err)
	}
	sum := sha256.Sum256([]byte(sp.Source))
	at := sp.SetAt
	out.Version, out.Source, out.SetBy, out.SetAt, out.SHA256 = doc.Version, sp.Source, sp.SetBy, &at, hex.EncodeToString(sum[:])
	p, err := ParsePolicy([]byte(sp.Source))
	if err != nil {
		return api.Policy{}, fmt.Errorf("stored policy version %d: %w", doc.Version, err)
	}
	if !p.DefaultAllow {
		out.Default = "deny"
	}
	for _, r := range p.Rules {
		out.Rules = append(out.Rules, api.PolicyRule{Name: r.Name, Effect: r.Effect, Expr: r.Expr, Description: r.Description, Line: r.Line})
	}
	return out, nil
}

// policy returns the compiled policy in force (nil when none, or when
// it has no rules and allows by default) and, when the stored version
// does not compile, why.
func (s *Service) policy(ctx context.Context) (p *Policy, broken string, err error) {
	s.pol.mu.Lock()
	defer s.pol.mu.Unlock()
	if !s.pol.loaded {
		if err := s.loadPolicy(ctx); err != nil {
			return nil, "", err
		}
	}
	return s.pol.p, s.pol.broken, nil
}

// loadPolicy reads and compiles the latest policy version; s.pol.mu is
// held. A stored version that no longer compiles denies everything (a
// policy that was meant to restrict must not fall open) and says why.
func (s *Service) loadPolicy(ctx context.Context) error {
	doc, err := s.store.Doc(ctx, PolicyRepo, PolicyRole, 0)
	if errors.Is(err, store.ErrNotFound) {
		s.pol.loaded, s.pol.version, s.pol.p = true, 0, nil
		return nil
	} else if err != nil {
		return err
	}
	if doc.Version == s.pol.version && s.pol.loaded {
		return nil
	}
	var sp storedPolicy
	p, perr := (*Policy)(nil), json.Unmarshal(doc.Data, &sp)
	if perr == nil {
		p, perr = ParsePolicy([]byte(sp.Source))
	}
	s.pol.broken = ""
	if perr != nil {
		p = &Policy{DefaultAllow: false}
		s.pol.broken = fmt.Sprintf("stored policy version %d does not compile (%v): every device is denied until a good policy is set", doc.Version, perr)
	}
	if p != nil && len(p.Rules) == 0 && p.DefaultAllow {
		p = nil
	}
	s.pol.loaded, s.pol.version, s.pol.p = true, doc.Version, p
	return nil
}

// stepPolicy is the policy's part of Step: it picks up a version set on
// another replica, forgets the release inputs (a product role may have
// been signed again), and makes every device decide again when the
// policy changed or, while one is set, every policyRecheck (a
// release's age moves on).
func (s *Service) stepPolicy(ctx context.Context) error {
	s.pol.mu.Lock()
	before := s.pol.version
	err := s.loadPolicy(ctx)
	s.pol.facts = nil
	changed := s.pol.version != before
	now := s.now()
	if s.pol.p != nil && now.Sub(s.pol.lastBump) >= policyRecheck {
		changed = true
	}
	if changed {
		s.pol.lastBump = now
	}
	s.pol.mu.Unlock()
	if err != nil {
		return err
	}
	if changed {
		s.bump()
	}
	return nil
}

// releaseFacts returns a published release's policy inputs, cached per
// target until the next Step.
func (s *Service) releaseFacts(ctx context.Context, target string) (ReleaseFacts, error) {
	s.pol.mu.Lock()
	f, ok := s.pol.facts[target]
	s.pol.mu.Unlock()
	if ok {
		return f, nil
	}
	product, _, _, err := release.ParseTargetPath(target)
	if err != nil {
		return ReleaseFacts{}, err
	}
	pub, err := s.catalog.Published(ctx)
	if err != nil {
		return ReleaseFacts{}, err
	}
	b, ok := pub.Roles[product]
	if !ok {
		return ReleaseFacts{}, refuse(NotFound, api.UnknownRelease, "no published release %s", target)
	}
	role, err := metadata.Targets().FromBytes(b)
	if err != nil {
		return ReleaseFacts{}, fmt.Errorf("published role %s: %w", product, err)
	}
	tf, ok := role.Signed.Targets[target]
	if !ok {
		return ReleaseFacts{}, refuse(NotFound, api.UnknownRelease, "no published release %s", target)
	}
	m, err := release.FromTarget(target, tf)
	if err != nil {
		return ReleaseFacts{}, err
	}
	signers, threshold, _ := roleSigners(pub.Targets, product, role)
	f = ReleaseFacts{Target: target, Product: m.Product, Version: m.Version, SecurityVersion: m.SecurityVersion,
		Hardware: m.HardwareIDs, Signers: signers, Threshold: threshold, Created: m.Created}
	s.pol.mu.Lock()
	if s.pol.facts == nil {
		s.pol.facts = map[string]ReleaseFacts{}
	}
	s.pol.facts[target] = f
	s.pol.mu.Unlock()
	return f, nil
}

// policyDecision decides whether the policy lets d take a rollout's
// release now; nil Policy allows without evaluating anything.
func (s *Service) policyDecision(ctx context.Context, a *active, d *store.Device) (Decision, error) {
	p, broken, err := s.policy(ctx)
	if err != nil || p == nil {
		return Decision{Allowed: true}, err
	}
	rel, err := s.releaseFacts(ctx, a.r.Target)
	if err != nil {
		return Decision{}, err
	}
	dec := p.Decide(Inputs(d, rel, a.spec.Critical, s.now()))
	if broken != "" {
		dec.Reason = broken
	}
	return dec, nil
}

// ExplainPolicy says whether the policy lets a device take a release
// (PRODUCT/VERSION, or its target path) and which rule decided; critical
// evaluates it as for a critical rollout.
func (s *Service) ExplainPolicy(ctx context.Context, deviceID, rel string, critical bool) (api.PolicyExplanation, error) {
	d, err := s.store.Device(ctx, deviceID)
	if errors.Is(err, store.ErrNotFound) {
		return api.PolicyExplanation{}, refuse(NotFound, api.NotFound, "no device %s (rampart device list shows them)", deviceID)
	} else if err != nil {
		return api.PolicyExplanation{}, err
	}
	target, _, err := s.resolveRelease(ctx, rel)
	if err != nil {
		return api.PolicyExplanation{}, err
	}
	facts, err := s.releaseFacts(ctx, target)
	if err != nil {
		return api.PolicyExplanation{}, err
	}
	// Read the stored version rather than the cache: explain must show
	// what is in force now, on any replica.
	s.pol.mu.Lock()
	err = s.loadPolicy(ctx)
	p, version, broken := s.pol.p, s.pol.version, s.pol.broken
	s.pol.mu.Unlock()
	if err != nil {
		return api.PolicyExplanation{}, err
	}
	in := Inputs(&d, facts, critical, s.now())
	if p == nil {
		p = &Policy{DefaultAllow: true}
	}
	dec := p.Decide(in)
	if broken != "" {
		dec.Reason = broken
	}
	out := api.PolicyExplanation{Device: d.ID, Release: target, PolicyVersion: version, Allowed: dec.Allowed, Decision: "deny",
		Rule: dec.Rule, Reason: dec.Reason, Trace: dec.Trace, Input: plainInputs(in)}
	if dec.Allowed {
		out.Decision = "allow"
	}
	if out.Trace == nil {
		out.Trace = []api.PolicyRuleResult{}
	}
	return out, nil
}

// denyByPolicy records that the policy does not let a device take a
// rollout's release: the device counts as policy-denied in the rollout
// (not in flight, not pending). A device in flight or installed is left
// as it is.
func (s *Service) denyByPolicy(ctx context.Context, a *active, d *store.Device, dec Decision) error {
	now := s.now()
	reason := denialReason(dec)
	return s.changeRolloutDevice(ctx, a, d, func(tx store.Tx, rd store.RolloutDevice) error {
		switch rd.Status {
		case PolicyDenied:
			if rd.Reason == reason || rd.Failures > 0 {
				return nil
			}
		}
		rd.Status, rd.UpdatedAt = PolicyDenied, now
		if rd.Failures == 0 {
			// A failed device keeps its failure's reason: the
			// rollout's failure reasons count it.
			rd.Reason = reason
		}
		return tx.PutRolloutDevice(ctx, rd)
	})
}

// denialReason is what a rollout records of a policy's denial.
func denialReason(dec Decision) string {
	if dec.Rule == "" {
		return "policy: default deny"
	}
	return "policy: " + dec.Rule
}

// PolicyDenied is the status in a rollout of a device the policy does
// not let take its release.
const PolicyDenied = "policy-denied"
