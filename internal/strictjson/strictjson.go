// Package strictjson checks a JSON document before encoding/json decodes it, for what
// encoding/json lets through: an object that names the same key twice (it keeps the last
// value, while a proxy or audit log that keeps the first sees another request), invalid
// UTF-8 and unpaired surrogate escapes (it silently replaces them with U+FFFD), and NUL
// characters (PostgreSQL refuses them in text, SQLite stores them). Such a document is
// refused whole, naming the offending field, so nothing of it is written anywhere.
package strictjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/oneprotect/telemetry/internal/domain"
)

// MaxDepth bounds the nesting of arrays and objects.
const MaxDepth = 512

// SyntaxError is malformed JSON. Callers that decode the document anyway (and word their own
// message) can tell it from the refusals above, which are *domain.Error.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("%s at byte %d", e.Msg, e.Offset) }

// Check returns nil when data is exactly one well-formed JSON value (surrounded by optional
// whitespace) without duplicate keys, invalid UTF-8 or NUL characters; a *domain.Error
// (invalid_request, naming the field as a dotted path of object keys, "body" at the top) for
// a refused document; or a *SyntaxError.
func Check(data []byte) error { return check(data, "", false) }

// CheckAllowNUL is Check without the NUL rule, for documents whose every string reaches a
// service that applies it (GraphQL: unknown input fields are refused by GraphQL itself), so
// that the service names the field as it does for every other bad value.
func CheckAllowNUL(data []byte) error { return check(data, "", true) }

// checkIn is CheckAllowNUL for a document that is itself the value of field (a GET request's
// variables parameter): errors name field.key instead of key.
func checkIn(data []byte, field string) error { return check(data, field, true) }

func check(data []byte, field string, allowNUL bool) error {
	s := scanner{data: data, allowNUL: allowNUL}
	if field != "" {
		s.path = []string{field}
	}
	s.space()
	if err := s.value(0); err != nil {
		return err
	}
	s.space()
	if s.pos != len(s.data) {
		return &SyntaxError{Offset: s.pos, Msg: "more than one JSON value"}
	}
	return nil
}

type scanner struct {
	data     []byte
	pos      int
	path     []string
	allowNUL bool
}

func (s *scanner) syntax(msg string) error { return &SyntaxError{Offset: s.pos, Msg: msg} }

// field names the current position: the object keys leading to it, joined by dots. It is
// cut short so that an error never carries a large part of the request.
func (s *scanner) field(extra string) string {
	parts := s.path
	if extra != "" {
		parts = append(parts[:len(parts):len(parts)], extra)
	}
	if len(parts) == 0 {
		return "body"
	}
	f := strings.Join(parts, ".")
	if slices.Contains(parts, "") {
		named := make([]string, len(parts))
		for i, p := range parts {
			if named[i] = p; p == "" {
				named[i] = `""` // an empty key, named visibly
			}
		}
		f = strings.Join(named, ".")
	}
	if len(f) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(f[cut]) {
			cut--
		}
		f = f[:cut] + "…"
	}
	return f
}

func (s *scanner) space() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) value(depth int) error {
	if s.pos >= len(s.data) {
		return s.syntax("unexpected end of JSON")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		if depth >= MaxDepth {
			return domain.Invalid(s.field(""), "JSON nested deeper than %d levels", MaxDepth)
		}
		return s.object(depth + 1)
	case c == '[':
		if depth >= MaxDepth {
			return domain.Invalid(s.field(""), "JSON nested deeper than %d levels", MaxDepth)
		}
		return s.array(depth + 1)
	case c == '"':
		_, err := s.str(false)
		return err
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.syntax("invalid character")
}

func (s *scanner) literal(lit string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return s.syntax("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

func (s *scanner) digits() int {
	start := s.pos
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
	}
	return s.pos - start
}

func (s *scanner) number() error {
	if s.data[s.pos] == '-' {
		s.pos++
	}
	if s.pos < len(s.data) && s.data[s.pos] == '0' {
		s.pos++
	} else if s.digits() == 0 {
		return s.syntax("invalid number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return s.syntax("invalid number")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return s.syntax("invalid number")
		}
	}
	return nil
}

func (s *scanner) array(depth int) error {
	s.pos++ // [
	s.space()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		s.space()
		if err := s.value(depth); err != nil {
			return err
		}
		s.space()
		if s.pos >= len(s.data) {
			return s.syntax("unexpected end of JSON")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.syntax("expected , or ] in array")
		}
	}
}

// smallObject is how many keys are compared pairwise before a map takes over.
const smallObject = 16

func (s *scanner) object(depth int) error {
	s.pos++ // {
	s.space()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	var keys []string
	var set map[string]struct{}
	for {
		s.space()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.syntax("expected a string key")
		}
		key, err := s.str(true)
		if err != nil {
			return err
		}
		if set != nil {
			if _, dup := set[key]; dup {
				return s.duplicate(key)
			}
			set[key] = struct{}{}
		} else {
			for _, k := range keys {
				if k == key {
					return s.duplicate(key)
				}
			}
			keys = append(keys, key)
			if len(keys) > smallObject {
				set = make(map[string]struct{}, 2*len(keys))
				for _, k := range keys {
					set[k] = struct{}{}
				}
			}
		}
		s.space()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.syntax("expected : after an object key")
		}
		s.pos++
		s.space()
		s.path = append(s.path, key)
		err = s.value(depth)
		s.path = s.path[:len(s.path)-1]
		if err != nil {
			return err
		}
		s.space()
		if s.pos >= len(s.data) {
			return s.syntax("unexpected end of JSON")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.syntax("expected , or } in object")
		}
	}
}

func (s *scanner) duplicate(key string) error {
	f := s.field(key)
	return domain.Invalid(f, "%s is named more than once", f)
}

// str scans a string starting at its opening quote. For a key it returns the decoded
// value (what encoding/json would compare); for a value it returns "".
func (s *scanner) str(key bool) (string, error) {
	// A bad key is reported against its object, a bad value against its key.
	where := func() string { return s.field("") }
	start := s.pos
	s.pos++
	escaped := false
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			raw := s.data[start:s.pos]
			if !key {
				return "", nil
			}
			if !escaped {
				return string(raw[1 : len(raw)-1]), nil
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return "", s.syntax("invalid string")
			}
			return v, nil
		case c == 0 && !s.allowNUL:
			return "", domain.Invalid(where(), "%s must not contain NUL characters", where())
		case c < 0x20:
			return "", s.syntax("control character in string")
		case c == '\\':
			escaped = true
			if err := s.escape(where); err != nil {
				return "", err
			}
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, n := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && n <= 1 {
				return "", domain.Invalid(where(), "%s must be valid UTF-8", where())
			}
			s.pos += n
		}
	}
	return "", s.syntax("unterminated string")
}

// escape scans one escape sequence at s.pos (the backslash).
func (s *scanner) escape(where func() string) error {
	if s.pos+1 >= len(s.data) {
		return s.syntax("unterminated string")
	}
	switch s.data[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
	default:
		return s.syntax("invalid escape in string")
	}
	r, ok := s.hex4(s.pos + 2)
	if !ok {
		return s.syntax("invalid \\u escape in string")
	}
	s.pos += 6
	switch {
	case r == 0 && !s.allowNUL:
		return domain.Invalid(where(), "%s must not contain NUL characters", where())
	case r >= 0xDC00 && r <= 0xDFFF:
		return domain.Invalid(where(), "%s must be valid UTF-8 (an unpaired surrogate escape)", where())
	case r >= 0xD800 && r <= 0xDBFF:
		// A high surrogate must be followed at once by a low one.
		if s.pos+1 < len(s.data) && s.data[s.pos] == '\\' && s.data[s.pos+1] == 'u' {
			if lo, ok := s.hex4(s.pos + 2); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				s.pos += 6
				return nil
			}
		}
		return domain.Invalid(where(), "%s must be valid UTF-8 (an unpaired surrogate escape)", where())
	}
	return nil
}

func (s *scanner) hex4(at int) (rune, bool) {
	if at+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
