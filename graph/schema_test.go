package graph_test

import (
	"os"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// Every root field must declare who may call it. A new field without an auth directive
// fails here, before it can ship open.
func TestEveryRootFieldHasAnAuthDirective(t *testing.T) {
	src, err := os.ReadFile("../schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	schema, gerr := gqlparser.LoadSchema(&ast.Source{Name: "schema.graphqls", Input: string(src)})
	if gerr != nil {
		t.Fatal(gerr)
	}
	auth := map[string]bool{"authenticated": true, "hasRole": true, "serviceAccount": true}
	checked := 0
	for _, root := range []*ast.Definition{schema.Query, schema.Mutation, schema.Subscription} {
		if root == nil {
			continue
		}
		for _, f := range root.Fields {
			if len(f.Name) > 1 && f.Name[:2] == "__" {
				continue // introspection, open while enabled
			}
			checked++
			found := false
			for _, d := range f.Directives {
				found = found || auth[d.Name]
			}
			if !found {
				t.Errorf("%s.%s has no auth directive", root.Name, f.Name)
			}
		}
	}
	if checked < 17 {
		t.Fatalf("checked only %d root fields; is the schema loaded?", checked)
	}
}
