package jsonpeek

import (
	"encoding/json"
	"testing"
)

var seeds = []string{
	`{"format":"mossfs-state","version":1}`,
	"{\n  \"id\": 2,\n  \"parent\": 1,\n  \"image\": \"c3b8\",\n  \"inputs\": [{\"kind\": \"tree\", \"n\": [1, 2.5e-3, -0, true, false, null]}],\n  \"counts\": {}\n}\n",
	`{"a":"\u00e9\n\"","b":[],"c":{"d":{"e":[[]]}}}`,
	`{"id":1,"ID":2}`,
	`{"id":1,"id":3}`,
	`{}`, ` { } `, `[]`, `"x"`, `1`, `{"a":}`, `{"a":1,}`, `{"a" 1}`, `{"a":01}`, `{"a":1.}`, `{"a":1e}`, `{"a":-}`,
	`{"a":"\x"}`, `{"a":"\u12g4"}`, "{\"a\":\"\x01\"}", `{"a":tru}`, `{"a":1}}`, `{"a":1} x`, `{"a":"\xff"}`, `{"\u0069d":5}`,
}

// FuzzMembers: whatever the text, Object agrees with encoding/json on
// whether it is a valid JSON object, and where Members says yes, its
// values are those encoding/json decodes (the last of duplicates; no key
// differing only in case); where String and Uint say yes, their values are
// encoding/json's.
func FuzzMembers(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m map[string]json.RawMessage
		jsonObject := json.Valid(data) && json.Unmarshal(data, &m) == nil && m != nil
		escapedKey := false
		isObject := Object(data, func(string, []byte) {})
		if !isObject {
			// Object also says no for keys with escapes; check with a
			// callback-free scan.
			s := scanner{data: data}
			s.space()
			isObject = s.object(nil, 0)
			s.space()
			isObject = isObject && s.i == len(data)
			escapedKey = isObject
		}
		if isObject != jsonObject {
			t.Fatalf("%q: Object says valid object %v, encoding/json %v", data, isObject, jsonObject)
		}
		if !isObject || escapedKey {
			return
		}
		keys := []string{"id", "image", "version"}
		vals, ok := Members(data, keys...)
		if !ok {
			return
		}
		var typed struct {
			ID      json.RawMessage `json:"id"`
			Image   json.RawMessage `json:"image"`
			Version json.RawMessage `json:"version"`
		}
		if err := json.Unmarshal(data, &typed); err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		for i, want := range []json.RawMessage{typed.ID, typed.Image, typed.Version} {
			if string(vals[i]) != string(want) {
				t.Fatalf("%q: member %s = %q, encoding/json %q", data, keys[i], vals[i], want)
			}
			if s, ok := String(vals[i]); ok {
				var js string
				if err := json.Unmarshal(vals[i], &js); err != nil || js != s {
					t.Fatalf("%q: String %q, encoding/json %q, %v", vals[i], s, js, err)
				}
			}
			if u, ok := Uint(vals[i]); ok {
				var ju uint64
				if err := json.Unmarshal(vals[i], &ju); err != nil || ju != u {
					t.Fatalf("%q: Uint %d, encoding/json %d, %v", vals[i], u, ju, err)
				}
			}
			if EmptyArray(vals[i]) {
				var ja []string
				if err := json.Unmarshal(vals[i], &ja); err != nil || len(ja) != 0 {
					t.Fatalf("%q: EmptyArray, encoding/json %q, %v", vals[i], ja, err)
				}
			}
		}
	})
}

// TestMembersOfRecords: the records mossfs writes read as encoding/json
// reads them.
func TestMembersOfRecords(t *testing.T) {
	tx := []byte("{\n  \"id\": 12,\n  \"parent\": 11,\n  \"time\": \"2026-12-07T07:51:10.1Z\",\n  \"image\": \"c3b82ea035ddf56263757ff0511a13dba668b4c1d733c31306f1654bef59330d\",\n  \"inputs\": [\n    {\n      \"kind\": \"tree\",\n      \"name\": \"a \\\"quoted\\\" name\"\n    }\n  ],\n  \"counts\": {\n    \"entries\": 2000\n  }\n}\n")
	vals, ok := Members(tx, "id", "image", "missing")
	if !ok {
		t.Fatal("Members refused a transaction record")
	}
	id, ok1 := Uint(vals[0])
	img, ok2 := String(vals[1])
	if !ok1 || !ok2 || id != 12 || img != "c3b82ea035ddf56263757ff0511a13dba668b4c1d733c31306f1654bef59330d" || vals[2] != nil {
		t.Errorf("id %d %v, image %q %v, missing %q", id, ok1, img, ok2, vals[2])
	}
	if _, ok := Members([]byte(`{"ID": 3}`), "id"); ok {
		t.Error("a key in another case was not refused")
	}
	if _, ok := Members(tx[:len(tx)-3], "id"); ok {
		t.Error("a truncated record was accepted")
	}
	if _, ok := Uint([]byte("1.0")); ok {
		t.Error("Uint accepted 1.0")
	}
	if _, ok := String([]byte(`"a\"b"`)); ok {
		t.Error("String accepted an escape")
	}
}
