package testenv

import (
	"context"
	"net/http"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/oneprotect/telemetry/internal/apidoc"
)

var openAPI struct {
	once   sync.Once
	router routers.Router
	err    error
}

// OpenAPIRouter loads and validates the served OpenAPI document once.
func OpenAPIRouter() (routers.Router, error) {
	openAPI.once.Do(func() {
		ctx := context.Background()
		doc, err := openapi3.NewLoader().LoadFromData(apidoc.OpenAPI)
		if err != nil {
			openAPI.err = err
			return
		}
		if err := doc.Validate(ctx); err != nil {
			openAPI.err = err
			return
		}
		doc.Servers = nil // match the test server's address, whatever it is
		openAPI.router, openAPI.err = gorillamux.NewRouter(doc)
	})
	return openAPI.router, openAPI.err
}

// CheckOpenAPI validates a real answer against the OpenAPI document: its status must be
// documented (or covered by the default response), its media type and body must match. An
// answer on a route the document does not describe is not checked (nil).
func CheckOpenAPI(req *http.Request, status int, header http.Header, body []byte) error {
	router, err := OpenAPIRouter()
	if err != nil {
		return err
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		return nil // not a documented route and method: 404/405 answers, undocumented endpoints
	}
	opts := &openapi3filter.Options{ExcludeRequestBody: true, IncludeResponseStatus: true,
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
		Status:                 status, Header: header, Options: opts,
	}
	in.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(context.Background(), in)
}
