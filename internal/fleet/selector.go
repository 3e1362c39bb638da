package fleet

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/store"
)

// Bounds of a CEL expression (selector or policy rule): its source
// length, and the cost of one evaluation (CEL's own measure: about one
// unit per operation), so that no expression an operator gives can make
// a check-in or a fleet scan expensive.
const (
	MaxExprBytes = 4 << 10
	maxExprCost  = 10000
)

// deviceVars are the device's inputs of selectors and policy rules.
func deviceVars() []cel.EnvOption {
	return []cel.EnvOption{
		cel.Variable("id", cel.StringType),
		cel.Variable("hardware", cel.StringType),
		cel.Variable("tags", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("version", cel.StringType),
		cel.Variable("security_version", cel.IntType),
		cel.Variable("risk", cel.StringType),
	}
}

// The environments are built on first use, not at init: every program
// linking this package (the CLI's many short runs in tests among them)
// would pay for them otherwise.
var selectorEnv = sync.OnceValue(func() *cel.Env { return mustEnv(deviceVars()...) })

func mustEnv(opts ...cel.EnvOption) *cel.Env {
	env, err := cel.NewEnv(opts...)
	if err != nil {
		panic(err)
	}
	return env
}

// ExprError is a CEL expression that does not compile, with the position
// (1-based line and column) of its first error.
type ExprError struct {
	Line, Column int
	Msg          string
}

func (e *ExprError) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Msg) }

// compile compiles a boolean CEL expression in env.
func compile(env *cel.Env, expr string) (cel.Program, error) {
	prg, _, err := compileAST(env, expr)
	return prg, err
}

// compileAST compiles a boolean CEL expression in env, and returns its
// checked form as well.
func compileAST(env *cel.Env, expr string) (cel.Program, *cel.Ast, error) {
	if len(expr) > MaxExprBytes {
		return nil, nil, &ExprError{Line: 1, Column: 1, Msg: fmt.Sprintf("the expression is %d bytes, more than %d", len(expr), MaxExprBytes)}
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		e := iss.Errors()[0]
		return nil, nil, &ExprError{Line: e.Location.Line(), Column: e.Location.Column() + 1, Msg: e.Message}
	}
	if ast.OutputType() != cel.BoolType {
		return nil, nil, &ExprError{Line: 1, Column: 1, Msg: fmt.Sprintf("the expression gives %s, not a bool", ast.OutputType())}
	}
	prg, err := env.Program(ast, cel.CostLimit(maxExprCost))
	return prg, ast, err
}

// Selector picks devices: a CEL expression over the device (id,
// hardware, tags, version, security_version, risk) that is true for the
// devices it selects. A tag the device does not have reads as "" (so
// tags.site != "lab" selects the devices without a site tag); has()
// tells whether it is set. The empty expression selects every device.
type Selector struct {
	expr string
	prg  cel.Program
	// readsID is set when the expression reads the device's id: then
	// it may select devices with equal facts differently.
	readsID bool
}

// CompileSelector compiles a selector; an error is a *Refusal
// (bad-selector) naming the line and column.
func CompileSelector(expr string) (*Selector, error) {
	if strings.TrimSpace(expr) == "" {
		return &Selector{}, nil
	}
	prg, ast, err := compileAST(selectorEnv(), expr)
	if err != nil {
		return nil, refuse(Invalid, api.BadSelector, "selector %v", err)
	}
	return &Selector{expr: expr, prg: prg, readsID: readsVar(ast, "id")}, nil
}

// readsVar reports whether a checked expression refers to the variable
// name (a comprehension's own variable of that name counts too, which
// errs on the safe side).
func readsVar(ast *cel.Ast, name string) bool {
	for _, ref := range ast.NativeRep().ReferenceMap() {
		if ref.Name == name && len(ref.OverloadIDs) == 0 {
			return true
		}
	}
	return false
}

// String is the selector's source.
func (s *Selector) String() string { return s.expr }

// Match reports whether d is selected. An evaluation error (over the
// cost limit, say) selects nothing.
func (s *Selector) Match(d *store.Device) bool {
	if s.prg == nil {
		return true
	}
	out, _, err := s.prg.Eval(deviceActivation(d))
	return err == nil && out == types.True
}

// maxScanMemo bounds what a fleet scan remembers of a selector's
// answers (distinct hardware, version, security version and tags); past
// it the selector is evaluated for every device.
const maxScanMemo = 1 << 16

// scanMatcher decides a selector for every device of a fleet scan. The
// selector's inputs are the device's facts, so when it does not read the
// id its answer is the same for devices with equal hardware, version,
// security version and tags: it is evaluated once per distinct set (a
// fleet has few), not once per device.
type scanMatcher struct {
	sel  *Selector
	memo map[factsKey]bool
}

type factsKey struct {
	hardware, version, tags string
	securityVersion         uint64
}

func newScanMatcher(sel *Selector) *scanMatcher {
	return &scanMatcher{sel: sel, memo: map[factsKey]bool{}}
}

// match reports whether the selector picks the device with facts f.
func (m *scanMatcher) match(f *store.DeviceFacts) bool {
	if m.sel.prg == nil {
		return true
	}
	if m.sel.readsID {
		return m.sel.Match(factsDevice(f))
	}
	k := factsKey{f.HardwareID, f.Version, f.TagsKey, f.SecurityVersion}
	if v, ok := m.memo[k]; ok {
		return v
	}
	v := m.sel.Match(factsDevice(f))
	if len(m.memo) < maxScanMemo {
		m.memo[k] = v
	}
	return v
}

// factsDevice is a device record with what selectors read (its tags map
// is shared: read only).
func factsDevice(f *store.DeviceFacts) *store.Device {
	return &store.Device{ID: f.ID, HardwareID: f.HardwareID, Version: f.Version, SecurityVersion: f.SecurityVersion, Tags: f.Tags}
}

// Risk is a device's risk level: its operator-set tag "risk" ("" when
// unset).
func Risk(d *store.Device) string { return d.Tags["risk"] }

func deviceActivation(d *store.Device) map[string]any {
	return map[string]any{
		"id": d.ID, "hardware": d.HardwareID, "tags": newTagMap(d.Tags),
		"version": d.Version, "security_version": int64(d.SecurityVersion), "risk": Risk(d),
	}
}

// tagMap is a device's tags as CEL sees them: a key the device does not
// have reads as "" rather than failing the expression, so a selector
// over a tag some devices lack still decides for them; has(tags.KEY)
// still tells whether it is set. It is deliberately not a
// traits.Mapper (whose Find serves both reads and has()), but an
// indexer with a field test, a size, membership and iteration.
type tagMap struct{ m traits.Mapper }

func newTagMap(tags map[string]string) tagMap {
	return tagMap{types.NewStringStringMap(types.DefaultTypeAdapter, tags)}
}

func (t tagMap) ConvertToNative(typ reflect.Type) (any, error) { return t.m.ConvertToNative(typ) }
func (t tagMap) ConvertToType(typ ref.Type) ref.Val            { return t.m.ConvertToType(typ) }
func (t tagMap) Equal(other ref.Val) ref.Val {
	if o, ok := other.(tagMap); ok {
		other = o.m
	}
	return t.m.Equal(other)
}
func (t tagMap) Type() ref.Type               { return t.m.Type() }
func (t tagMap) Value() any                   { return t.m.Value() }
func (t tagMap) Contains(key ref.Val) ref.Val { return t.m.Contains(key) }
func (t tagMap) IsSet(key ref.Val) ref.Val    { return t.m.Contains(key) }
func (t tagMap) Iterator() traits.Iterator    { return t.m.Iterator() }
func (t tagMap) Size() ref.Val                { return t.m.Size() }
func (t tagMap) Get(key ref.Val) ref.Val {
	if v, ok := t.m.Find(key); ok {
		return v
	}
	if _, ok := key.(types.String); ok {
		return types.String("")
	}
	return t.m.Get(key)
}
