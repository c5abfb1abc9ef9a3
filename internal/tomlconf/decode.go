package tomlconf

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

// The TOML library stops at the first value of the wrong type, and matches
// keys to fields without regard to case. decoder walks the target's type
// instead, decoding each value on its own: every wrong type and unknown key
// in a file is reported at once, each with its indexed key
// (site[1].route[0].path), and keys match their toml tags exactly.

type decoder struct {
	md   toml.MetaData
	doc  *Doc
	errs Errors
}

var (
	unmarshalerType     = reflect.TypeFor[toml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// custom reports whether values of t decode themselves.
func custom(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(unmarshalerType) || p.Implements(textUnmarshalerType)
}

func (d *decoder) fail(key string, err error) {
	e := &Error{File: d.doc.File, Key: key, Msg: err.Error(), Line: d.doc.Line(key)}
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[3]
	}
	d.errs = append(d.errs, e)
}

// value decodes p into v (addressable), whose key is key.
func (d *decoder) value(p toml.Primitive, v reflect.Value, key string) {
	t := v.Type()
	if custom(t) {
		if err := d.md.PrimitiveDecode(p, v.Addr().Interface()); err != nil {
			d.fail(key, err)
		}
		return
	}
	switch {
	case t.Kind() == reflect.Struct:
		d.table(p, v, key)
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct && !custom(t.Elem()):
		e := reflect.New(t.Elem())
		if d.table(p, e.Elem(), key) {
			v.Set(e)
		}
	case t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8:
		// Element by element, so that a bad element is named: hosts[2].
		var raw any
		if err := d.md.PrimitiveDecode(p, &raw); err != nil {
			d.fail(key, err)
			return
		}
		if isTable(t.Elem()) {
			if _, ok := raw.([]map[string]any); !ok {
				if list, ok := raw.([]any); !ok || !allTables(list) {
					d.fail(key, fmt.Errorf("want an array of tables ([[%s]] or [{ ... }]), not %s", lastPart(key), tomlType(raw)))
					return
				}
			}
		} else {
			switch raw.(type) {
			case []any, []map[string]any:
			default:
				d.fail(key, fmt.Errorf("want an array, not %s", tomlType(raw)))
				return
			}
		}
		var elems []toml.Primitive
		if err := d.md.PrimitiveDecode(p, &elems); err != nil {
			d.fail(key, err)
			return
		}
		s := reflect.MakeSlice(t, len(elems), len(elems))
		for i, ep := range elems {
			d.value(ep, s.Index(i), fmt.Sprintf("%s[%d]", key, i))
		}
		v.Set(s)
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String && isTable(t.Elem()):
		var raw any
		if err := d.md.PrimitiveDecode(p, &raw); err != nil {
			d.fail(key, err)
			return
		}
		if _, ok := raw.(map[string]any); !ok {
			d.fail(key, fmt.Errorf("want a table, not %s", tomlType(raw)))
			return
		}
		var elems map[string]toml.Primitive
		if err := d.md.PrimitiveDecode(p, &elems); err != nil {
			d.fail(key, err)
			return
		}
		m := reflect.MakeMapWithSize(t, len(elems))
		for name, ep := range elems {
			e := reflect.New(t.Elem()).Elem()
			d.value(ep, e, key+"."+name)
			m.SetMapIndex(reflect.ValueOf(name).Convert(t.Key()), e)
		}
		v.Set(m)
	default:
		if err := d.md.PrimitiveDecode(p, v.Addr().Interface()); err != nil {
			d.fail(key, err)
		}
	}
}

// isTable reports whether t (or what it points to) is decoded key by key.
func isTable(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && !custom(t)
}

func allTables(list []any) bool {
	for _, e := range list {
		if _, ok := e.(map[string]any); !ok {
			return false
		}
	}
	return true
}

// table decodes a TOML table into the struct v, key by key; ok is false
// when p is not a table at all.
func (d *decoder) table(p toml.Primitive, v reflect.Value, key string) bool {
	var raw any
	if err := d.md.PrimitiveDecode(p, &raw); err != nil {
		d.fail(key, err)
		return false
	}
	if _, ok := raw.(map[string]any); !ok {
		d.fail(key, fmt.Errorf("want a table, not %s", tomlType(raw)))
		return false
	}
	var keys map[string]toml.Primitive
	if err := d.md.PrimitiveDecode(p, &keys); err != nil {
		d.fail(key, err)
		return false
	}
	d.fields(keys, v, key)
	return true
}

// fields decodes each key of a table into the field tagged with it.
func (d *decoder) fields(keys map[string]toml.Primitive, v reflect.Value, key string) {
	fs := fieldsOf(v.Type())
	for name, p := range keys {
		sub := name
		if key != "" {
			sub = key + "." + name
		}
		idx, ok := fs[name]
		if !ok {
			d.errs = append(d.errs, &Error{File: d.doc.File, Line: d.doc.Line(sub), Key: sub, Msg: "unknown key"})
			continue
		}
		d.value(p, fieldByIndex(v, idx), sub)
	}
}

// fieldByIndex is v.FieldByIndex, allocating embedded pointers on the way.
func fieldByIndex(v reflect.Value, idx []int) reflect.Value {
	for i, x := range idx {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v
}

var fieldCache sync.Map // reflect.Type -> map[string][]int

// fieldsOf maps the toml keys of struct type t to field index paths.
// Fields without a tag are not keys (toml:"-" likewise), except embedded
// structs, whose keys are the parent's.
func fieldsOf(t reflect.Type) map[string][]int {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string][]int)
	}
	m := map[string][]int{}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			idx := append(append([]int{}, prefix...), i)
			tag, hasTag := f.Tag.Lookup("toml")
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && !hasTag {
				et := f.Type
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					walk(et, idx)
				}
				continue
			}
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			m[name] = idx
		}
	}
	walk(t, nil)
	fieldCache.Store(t, m)
	return m
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

func lastPart(key string) string {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		key = key[i+1:]
	}
	if i := strings.IndexByte(key, '['); i >= 0 {
		key = key[:i]
	}
	return key
}
