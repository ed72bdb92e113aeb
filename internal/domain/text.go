package domain

import (
	"strings"
	"unicode/utf8"
)

// Text rules shared by every service, so that REST, GraphQL and the command line refuse the
// same input the same way and both databases see the same bytes: PostgreSQL refuses a NUL
// in text (a 500 if it got that far) while SQLite would store it, and invalid UTF-8 would be
// replaced or refused depending on the driver. Checked in the service, before any write.

// TextError returns nil when s is valid UTF-8 without NUL characters, else an
// invalid_request error naming field.
func TextError(field, s string) error {
	if !utf8.ValidString(s) {
		return Invalid(field, "%s must be valid UTF-8", field)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return Invalid(field, "%s must not contain NUL characters", field)
	}
	return nil
}

// CheckText checks s as TextError does and bounds it to max characters (runes).
func CheckText(field, s string, max int) error {
	if err := TextError(field, s); err != nil {
		return err
	}
	if max > 0 && len(s) > max && utf8.RuneCountInString(s) > max {
		return Invalid(field, "%s must be at most %d characters", field, max)
	}
	return nil
}

// CheckOptionalText is CheckText for an optional value (nil passes).
func CheckOptionalText(field string, s *string, max int) error {
	if s == nil {
		return nil
	}
	return CheckText(field, *s, max)
}
