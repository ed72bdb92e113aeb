// Package flatcachetest helps test a flatcache.Codec against every field of its type, so that
// a field added to the type later and forgotten by the codec fails a test instead of being
// lost from every cache hit.
package flatcachetest

import (
	"fmt"
	"reflect"
	"time"
)

// Filled returns a T whose every exported field holds a distinct value that is not zero:
// strings, string types, integers, times (UTC, to the nanosecond), and pointers to them.
func Filled[T any]() T {
	var v T
	rv := reflect.ValueOf(&v).Elem()
	for i := range rv.NumField() {
		if rv.Type().Field(i).IsExported() {
			fill(rv.Field(i), i+1)
		}
	}
	return v
}

var timeType = reflect.TypeOf(time.Time{})

func fill(f reflect.Value, n int) {
	switch {
	case f.Type() == timeType:
		f.Set(reflect.ValueOf(time.Date(2026, 1, n, n, n, n, n*1001, time.UTC)))
	case f.Kind() == reflect.Pointer:
		p := reflect.New(f.Type().Elem())
		fill(p.Elem(), n)
		f.Set(p)
	case f.Kind() == reflect.String:
		f.SetString(fmt.Sprintf("field-%d", n))
	case f.CanInt():
		f.SetInt(int64(n) * 1_000_003)
	default:
		panic(fmt.Sprintf("flatcachetest: no filler for a %s field", f.Type()))
	}
}
