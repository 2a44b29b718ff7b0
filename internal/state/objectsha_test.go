package state

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/mossfs/mossfs/internal/stone"
)

// storeSHAs hashes every object of the store from its file: the oracle
// the log is checked against.
func storeSHAs(t *testing.T, s *State) map[[32]byte][32]byte {
	t.Helper()
	out := map[[32]byte][32]byte{}
	err := s.Store().Walk(func(d [32]byte, _ int64) error {
		f, err := s.Store().Open(d)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		out[d] = [32]byte(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSHAs(a, b map[[32]byte][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestObjectSHALog: an import records, for every object it stores, the
// sha256 of its content (checked against hashing the object files), and
// the log reads the same from another State; a record torn by a crash is
// passed over and the records after it still read; a digest with two
// different records is trusted for neither; a wrong record is read as it
// is (the log is trusted), and Verify reports it, and the conflict, until
// its rebuild writes the log anew. No log reads as no records; a file
// that is not a log is an error.
func TestObjectSHALog(t *testing.T) {
	s := newState(t)
	if m, err := s.ObjectSHA256s(); err != nil || len(m) != 0 {
		t.Fatalf("no log: %d records, %v", len(m), err)
	}
	f := treeFrag(t, s, "f", 40)
	compose(t, s, ComposeOptions{Add: []Fragment{f}})
	want := storeSHAs(t, s)
	if len(want) != 40 {
		t.Fatalf("%d objects, want 40", len(want))
	}
	s2, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.ObjectSHA256s()
	if err != nil || !sameSHAs(got, want) {
		t.Fatalf("log after the import: %d records (%v), want the sha256 of each of the %d objects", len(got), err, len(want))
	}

	// A torn record, then one appended after it.
	var extraObj, extraSHA [32]byte
	extraObj[0], extraSHA[0] = 1, 2
	lf, err := os.OpenFile(s.shaLogPath(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := shaLogAppend(nil, [32]byte{9}, [32]byte{9})[:41]
	if _, err := lf.Write(torn); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	if err := s2.recordSHA(extraObj, extraSHA); err != nil {
		t.Fatal(err)
	}
	if err := s2.flushSHALog(); err != nil {
		t.Fatal(err)
	}
	got, err = s.ObjectSHA256s()
	if err != nil || len(got) != 41 || got[extraObj] != extraSHA || !sameSHAs(got, with(want, extraObj, extraSHA)) {
		t.Fatalf("after a torn record: %d records (%v), want the 40 and the one appended after it", len(got), err)
	}
	if _, ok := got[[32]byte{9}]; ok {
		t.Fatal("the torn record was read")
	}

	// A conflicting record: the object drops out, Verify reports it.
	var obj [32]byte
	for d := range want {
		obj = d
		break
	}
	bad := want[obj]
	bad[5] ^= 0x40
	if err := s2.recordSHA(obj, bad); err != nil {
		t.Fatal(err)
	}
	if err := s2.Sync(); err != nil {
		t.Fatal(err)
	}
	got, _ = s.ObjectSHA256s()
	if _, ok := got[obj]; ok || len(got) != 40 {
		t.Fatalf("a digest with two records: in the map (%v), %d records", ok, len(got))
	}
	res, err := s.Verify(VerifyOptions{NoQuarantine: true})
	if err != nil || res.Index.WrongSHA256Records != 1 || res.OK() {
		t.Fatalf("verify of a log with a conflict: %+v %v", res.Index, err)
	}

	// A wrong record alone is trusted by readers, and found by Verify.
	objs, shas := [][32]byte{}, [][32]byte{}
	for d, sh := range want {
		if d == obj {
			sh = bad
		}
		objs, shas = append(objs, d), append(shas, sh)
	}
	if err := s.writeSHALog(objs, shas); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.ObjectSHA256s(); got[obj] != bad {
		t.Fatal("the wrong record was not read as it is")
	}
	res, err = s.Verify(VerifyOptions{NoQuarantine: true})
	if err != nil || res.Index.WrongSHA256Records != 1 || res.OK() {
		t.Fatalf("verify of a log with a wrong record: %+v %v", res.Index, err)
	}
	if res, err = s.Verify(VerifyOptions{}); err != nil || !res.OK() {
		t.Fatalf("verify rebuilding: %+v %v", res.Index, err)
	}
	if got, err = s.ObjectSHA256s(); err != nil || !sameSHAs(got, want) {
		t.Fatalf("after the rebuild: %d records (%v), want exactly the objects'", len(got), err)
	}
	if res, err = s.Verify(VerifyOptions{NoQuarantine: true}); err != nil || res.Index.WrongSHA256Records != 0 || !res.Index.OK() {
		t.Fatalf("verify after the rebuild: %+v %v", res.Index, err)
	}

	if err := os.WriteFile(s.shaLogPath(), []byte("not a log at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ObjectSHA256s(); err == nil {
		t.Fatal("a file that is not a log read without an error")
	}
}

func with(m map[[32]byte][32]byte, k, v [32]byte) map[[32]byte][32]byte {
	out := map[[32]byte][32]byte{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

// TestObjectSHALogGC: gc keeps the records of the objects that stay and
// drops those of the objects it removes.
func TestObjectSHALogGC(t *testing.T) {
	s := newState(t)
	tx1 := compose(t, s, ComposeOptions{Add: []Fragment{treeFrag(t, s, "a", 10)}})
	compose(t, s, ComposeOptions{Add: []Fragment{treeFrag(t, s, "b", 7)}})
	if got, err := s.ObjectSHA256s(); err != nil || len(got) != 17 {
		t.Fatalf("before gc: %d records, %v", len(got), err)
	}
	if err := s.Remove([]uint64{tx1.ID}, true); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(GCOptions{})
	if err != nil || res.ObjectsRemoved != 10 {
		t.Fatalf("gc: %+v %v", res, err)
	}
	want := storeSHAs(t, s)
	if got, err := s.ObjectSHA256s(); err != nil || len(want) != 7 || !sameSHAs(got, want) {
		t.Fatalf("after gc: %d records (%v), want the %d objects left", len(got), err, len(want))
	}
}

// treeFrag imports n files of distinct contents named by prefix.
func treeFrag(t *testing.T, s *State, prefix string, n int) Fragment {
	t.Helper()
	src := t.TempDir()
	for i := range n {
		if err := os.WriteFile(filepath.Join(src, prefix+strconv.Itoa(i)), []byte(big(prefix+" content "+strconv.Itoa(i))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := im.Tree(context.Background(), src, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	f.Input = Input{Kind: KindTree, Name: prefix}
	return f
}

// TestObjectSHALogV1: a log of version 1 (XXH3-64 checksums) reads as no
// records, without an error; the next import replaces it with a log of
// this version holding its records; verify reports a version 1 log and its
// rebuild writes every object's record.
func TestObjectSHALogV1(t *testing.T) {
	s := newState(t)
	v1 := append(shaLogHeaderV1[:], make([]byte, shaLogRecord)...)
	if err := os.WriteFile(s.shaLogPath(), v1, 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := s.ObjectSHA256s(); err != nil || len(m) != 0 {
		t.Fatalf("version 1 log: %d records, %v; want none and no error", len(m), err)
	}
	compose(t, s, ComposeOptions{Add: []Fragment{treeFrag(t, s, "f", 5)}})
	want := storeSHAs(t, s)
	data, err := os.ReadFile(s.shaLogPath())
	if err != nil || len(data) < len(shaLogHeader) || [8]byte(data[:8]) != shaLogHeader {
		t.Fatalf("log after an import over a version 1 log: %q…, %v; want this version's header", data[:min(len(data), 8)], err)
	}
	if got, err := s.ObjectSHA256s(); err != nil || !sameSHAs(got, want) {
		t.Fatalf("after the import: %d records (%v), want the %d objects'", len(got), err, len(want))
	}

	if err := os.WriteFile(s.shaLogPath(), v1, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := s.Verify(VerifyOptions{NoQuarantine: true})
	if err != nil || res.Index.WrongSHA256Records == 0 || res.OK() {
		t.Fatalf("verify of a version 1 log: %+v %v; want it reported", res.Index, err)
	}
	if res, err = s.Verify(VerifyOptions{}); err != nil || !res.OK() {
		t.Fatalf("verify rebuilding: %+v %v", res.Index, err)
	}
	if got, err := s.ObjectSHA256s(); err != nil || !sameSHAs(got, want) {
		t.Fatalf("after the rebuild: %d records (%v), want the %d objects'", len(got), err, len(want))
	}
}
