package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"
)

// Shape limits, checked before gqlgen validates a document. Validation and the cost walk
// expand fragments and compare same-named fields pairwise, so a short document whose
// fragments spread twice per level (2^30 fields from 2 KB), or 10,000 copies of one field,
// would keep them busy for seconds or forever. Counting the expanded size here, with each
// fragment counted once and reused, takes time linear in the document.
const (
	// maxFields bounds the fields of an operation once fragments are expanded.
	maxFields = 1_000
	// maxDepth bounds nesting (GraphiQL's introspection query needs about 13).
	maxDepth = 20
	// maxHeartbeats bounds the submitHeartbeat fields of one operation (CONTRACT §5: a
	// collector relays at most ten agents' heartbeats at once). Counted here, where the
	// verdict is cached per document, rather than in the per-request cost walk, which would
	// decode every heartbeat's arguments once more just to cost it.
	maxHeartbeats = 10
)

type shape struct{ fields, depth, heartbeats int }

// shapeLimit refuses operations over maxFields, maxDepth or maxHeartbeats with
// COMPLEXITY_LIMIT_EXCEEDED.
// Verdicts on accepted documents are cached, so a dashboard's repeated query is parsed once.
type shapeLimit struct {
	ok *lru.LRU[bool]
}

func newShapeLimit() *shapeLimit { return &shapeLimit{ok: lru.New[bool](1000)} }

func (*shapeLimit) ExtensionName() string                   { return "ShapeLimit" }
func (*shapeLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (l *shapeLimit) MutateOperationParameters(ctx context.Context, p *graphql.RawParams) *gqlerror.Error {
	if _, ok := l.ok.Get(ctx, p.Query); ok {
		return nil
	}
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: p.Query}, parserTokenLimit)
	if err != nil {
		return nil // gqlgen parses it again and reports the error with its standard code
	}
	m := &measurer{doc: doc, memo: map[string]shape{}, active: map[string]bool{}}
	for _, op := range doc.Operations {
		s := m.selections(op.SelectionSet)
		var err *gqlerror.Error
		switch {
		case s.fields > maxFields:
			err = gqlerror.Errorf("the operation has more than %d fields once fragments are expanded", maxFields)
		case s.depth > maxDepth:
			err = gqlerror.Errorf("the operation nests fields more than %d deep", maxDepth)
		case s.heartbeats > maxHeartbeats:
			err = gqlerror.Errorf("the operation has more than %d submitHeartbeat fields", maxHeartbeats)
		default:
			continue
		}
		err.Extensions = map[string]any{"code": "COMPLEXITY_LIMIT_EXCEEDED"}
		return err
	}
	l.ok.Add(ctx, p.Query, true)
	return nil
}

type measurer struct {
	doc    *ast.QueryDocument
	memo   map[string]shape
	active map[string]bool // fragments being measured; a cycle is left to validation
}

// selections measures a selection set, saturating just above the limits.
func (m *measurer) selections(set ast.SelectionSet) shape {
	var out shape
	add := func(s shape) {
		out.fields = min(out.fields+s.fields, maxFields+1)
		out.depth = max(out.depth, s.depth)
		out.heartbeats = min(out.heartbeats+s.heartbeats, maxHeartbeats+1)
	}
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			child := m.selections(s.SelectionSet)
			f := shape{fields: 1 + child.fields, depth: min(1+child.depth, maxDepth+1), heartbeats: child.heartbeats}
			if s.Name == "submitHeartbeat" {
				f.heartbeats++
			}
			add(f)
		case *ast.InlineFragment:
			add(m.selections(s.SelectionSet))
		case *ast.FragmentSpread:
			add(m.fragment(s.Name))
		}
	}
	return out
}

func (m *measurer) fragment(name string) shape {
	if s, ok := m.memo[name]; ok {
		return s
	}
	def := m.doc.Fragments.ForName(name)
	if def == nil || m.active[name] {
		return shape{}
	}
	m.active[name] = true
	s := m.selections(def.SelectionSet)
	delete(m.active, name)
	m.memo[name] = s
	return s
}
