package graph

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// With --introspection=false the schema is not described to clients, and validation
// messages must not describe it either: gqlgen's name the expected type ("expecting type
// AssetFilter"), the input type of a misspelt field, enum values, and suggest names ("Did you
// mean"). Each validation message is replaced by a short one per rule that repeats only
// the token the client wrote at the error's location; variable errors keep their path
// (the keys the client sent) and say only that the value does not fit.

var hiddenMessages = map[string]string{
	"FieldsOnCorrectType":          "cannot query this field here",
	"KnownArgumentNames":           "unknown argument",
	"KnownTypeNames":               "unknown type",
	"KnownDirectives":              "unknown or misplaced directive",
	"ValuesOfCorrectType":          "invalid value",
	"ScalarLeafs":                  "this field needs a selection of subfields, or has none",
	"PossibleFragmentSpreads":      "this fragment cannot be spread here",
	"FragmentsOnCompositeTypes":    "fragments apply to object types only",
	"ProvidedRequiredArguments":    "a required argument or input field is missing",
	"VariablesInAllowedPosition":   "a variable is used where its type does not fit",
	"VariablesAreInputTypes":       "a variable's type must be an input type",
	"OverlappingFieldsCanBeMerged": "fields with the same name or alias conflict",
	"KnownRootType":                "this operation type is not supported",
}

// hideSchema rewrites a validation error as described above.
func hideSchema(ctx context.Context, e *gqlerror.Error) *gqlerror.Error {
	if e.Extensions["code"] != "GRAPHQL_VALIDATION_FAILED" {
		return e
	}
	rule := strings.TrimSuffix(e.Rule, "WithoutSuggestions")
	msg, known := hiddenMessages[rule]
	switch {
	case known:
		tok := ""
		switch rule {
		case "FieldsOnCorrectType", "KnownArgumentNames", "KnownTypeNames", "KnownDirectives", "ScalarLeafs":
			tok = firstQuoted(e.Message) // these messages quote the client's name first
		case "PossibleFragmentSpreads", "FragmentsOnCompositeTypes":
		default:
			tok = tokenAt(ctx, e.Locations)
		}
		if tok != "" {
			msg += ": " + tok
		}
	case e.Rule == "" && len(e.Path) > 0 && e.Path[0] == ast.PathName("variable"):
		msg = "the variable's value does not fit its type"
	default:
		// Rules whose messages only repeat the client's own names (unused or undefined
		// variables and fragments, duplicates) keep them, minus any suggestion.
		msg, _, _ = strings.Cut(e.Message, " Did you mean")
	}
	return &gqlerror.Error{Message: msg, Locations: e.Locations, Path: e.Path, Extensions: e.Extensions, Rule: e.Rule}
}

func firstQuoted(msg string) string {
	_, rest, ok := strings.Cut(msg, `"`)
	if !ok {
		return ""
	}
	tok, _, ok := strings.Cut(rest, `"`)
	if !ok || len(tok) > 100 {
		return ""
	}
	return tok
}

// tokenAt returns the name, variable or number the client wrote at the error's first
// location, "" when there is none.
func tokenAt(ctx context.Context, locs []gqlerror.Location) string {
	if len(locs) == 0 || !graphql.HasOperationContext(ctx) {
		return ""
	}
	query := graphql.GetOperationContext(ctx).RawQuery
	line := 1
	i := 0
	for i < len(query) && line < locs[0].Line {
		if query[i] == '\n' {
			line++
		}
		i++
	}
	i += locs[0].Column - 1
	if i < 0 || i >= len(query) {
		return ""
	}
	j := i
	if query[j] == '$' || query[j] == '@' || query[j] == '-' {
		j++
	}
	for j < len(query) && isNameByte(query[j]) {
		j++
	}
	if j-i > 100 {
		j = i + 100
	}
	return query[i:j]
}

func isNameByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// introspectionOff refuses __schema and __type (anywhere in the operation's root
// selection, fragments included) before anything runs, with a client error: otherwise
// gqlgen resolves them into an "introspection disabled" error that looked internal.
type introspectionOff struct{}

func (introspectionOff) ExtensionName() string                   { return "IntrospectionOff" }
func (introspectionOff) Validate(graphql.ExecutableSchema) error { return nil }

func (introspectionOff) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil || !selectsIntrospection(oc.Operation.SelectionSet, map[string]bool{}) {
		return nil
	}
	return &gqlerror.Error{Message: "introspection is disabled on this server",
		Extensions: map[string]any{"code": "GRAPHQL_VALIDATION_FAILED"}}
}

func selectsIntrospection(set ast.SelectionSet, seen map[string]bool) bool {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "__schema" || s.Name == "__type" {
				return true
			}
		case *ast.InlineFragment:
			if selectsIntrospection(s.SelectionSet, seen) {
				return true
			}
		case *ast.FragmentSpread:
			if s.Definition != nil && !seen[s.Name] {
				seen[s.Name] = true
				if selectsIntrospection(s.Definition.SelectionSet, seen) {
					return true
				}
			}
		}
	}
	return false
}
