package stone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeebo/xxh3"

	"github.com/mossfs/mossfs/internal/testenv"
)

// expected mirrors shared/testdata/stones/expected.json.
type expected struct {
	HashVectors map[string]string `json:"hash_vectors"`
	Files       []expectedFile    `json:"files"`
}

type expectedFile struct {
	File    string `json:"file"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	Prelude struct {
		NumPayloads int    `json:"num_payloads"`
		FileType    int    `json:"file_type"`
		Version     int    `json:"version"`
		RawHex      string `json:"raw_hex"`
	} `json:"prelude"`
	Payloads []struct {
		HeaderOffset int64  `json:"header_offset"`
		Kind         int    `json:"kind"`
		Compression  int    `json:"compression"`
		StoredSize   uint64 `json:"stored_size"`
		PlainSize    uint64 `json:"plain_size"`
		Checksum     string `json:"checksum_xxh3_64_hex"`
		NumRecords   uint32 `json:"num_records"`
		Version      uint16 `json:"version"`
	} `json:"payloads"`
	MetaPayloads json.RawMessage `json:"meta_payloads"`
	Layout       *struct {
		Count  int            `json:"count"`
		ByType map[string]int `json:"by_type"`
		NULs   int            `json:"nul_terminated_strings"`
		First  []struct {
			UID       uint32 `json:"uid"`
			GID       uint32 `json:"gid"`
			Mode      string `json:"mode_octal"`
			Tag       uint32 `json:"tag"`
			Type      int    `json:"type"`
			SourceHex string `json:"source_hex"`
			Source    string `json:"source"`
			Target    string `json:"target"`
		} `json:"first"`
	} `json:"layout"`
	Index *struct {
		Count int `json:"count"`
		First []struct {
			Start  uint64 `json:"start"`
			End    uint64 `json:"end"`
			Digest string `json:"digest_hex"`
		} `json:"first"`
		AllVerify bool `json:"all_digests_verify_xxh3_128"`
	} `json:"index"`
	ContentPlainSize *uint64   `json:"content_plain_size"`
	CASSample        []casPath `json:"cas_paths_sample"`
	CASLeadingZero   []casPath `json:"cas_paths_leading_zero"`
	LeadingZeroCount *int      `json:"cas_paths_leading_zero_count"`
}

type casPath struct {
	Digest string `json:"digest_hex32"`
	Path   string `json:"moss_cas_relpath_under_assets_v2"`
}

type expectedMeta struct {
	Length uint32          `json:"length"`
	Tag    MetaTag         `json:"tag"`
	Kind   MetaKind        `json:"kind"`
	Value  json.RawMessage `json:"value"`
}

func stonesDir(t testing.TB) string { return testenv.SharedPath(t, "testdata", "stones") }

func loadExpected(t testing.TB) *expected {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stonesDir(t), "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("expected.json: %v", err)
	}
	if len(e.Files) != 7 {
		t.Fatalf("expected.json lists %d files, want 7", len(e.Files))
	}
	return &e
}

func readStone(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stonesDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func openBytes(t testing.TB, data []byte, name string) *Package {
	t.Helper()
	p, err := Open(bytes.NewReader(data), int64(len(data)), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHashVectors(t *testing.T) {
	e := loadExpected(t)
	for in, want := range map[string]string{
		"xxh3_128('')":            XXH128(xxh3.Hash128(nil).Bytes()).String(),
		"xxh3_64('')":             fmt.Sprintf("%016x", xxh3.Hash(nil)),
		"xxh3_128('hello world')": XXH128(xxh3.HashString128("hello world").Bytes()).String(),
		"xxh3_64('hello world')":  fmt.Sprintf("%016x", xxh3.HashString("hello world")),
	} {
		if got := e.HashVectors[in]; got != want {
			t.Errorf("%s: computed %s, expected.json %s", in, want, got)
		}
	}
	if EmptyXXH128.String() != e.HashVectors["xxh3_128('')"] {
		t.Errorf("EmptyXXH128 = %s", EmptyXXH128)
	}
}

// TestExpected checks every shipped file against expected.json field by field.
func TestExpected(t *testing.T) {
	e := loadExpected(t)
	for _, ef := range e.Files {
		t.Run(ef.File, func(t *testing.T) {
			data := readStone(t, ef.File)
			if int64(len(data)) != ef.Size || fmt.Sprintf("%x", sha256.Sum256(data)) != ef.SHA256 {
				t.Fatalf("test file differs from expected.json (size %d, sha256 %x)", len(data), sha256.Sum256(data))
			}
			p := openBytes(t, data, ef.File)
			checkPrelude(t, p, &ef, data)
			checkMeta(t, p, &ef)
			checkLayout(t, p, &ef)
			checkIndex(t, p, &ef)
		})
	}
}

func checkPrelude(t *testing.T, p *Package, ef *expectedFile, data []byte) {
	if hex.EncodeToString(data[:32]) != ef.Prelude.RawHex {
		t.Errorf("prelude bytes %x", data[:32])
	}
	if int(p.Prelude.NumPayloads) != ef.Prelude.NumPayloads || int(p.Prelude.FileType) != ef.Prelude.FileType || int(p.Prelude.Version) != ef.Prelude.Version {
		t.Errorf("prelude %+v, want %+v", p.Prelude, ef.Prelude)
	}
	if len(p.Payloads) != len(ef.Payloads) {
		t.Fatalf("%d payloads, want %d", len(p.Payloads), len(ef.Payloads))
	}
	for i, w := range ef.Payloads {
		g := p.Payloads[i]
		if g.Offset != w.HeaderOffset || int(g.Kind) != w.Kind || int(g.Compression) != w.Compression ||
			g.StoredSize != w.StoredSize || g.PlainSize != w.PlainSize || fmt.Sprintf("%016x", g.Checksum) != w.Checksum ||
			g.NumRecords != w.NumRecords || g.Version != w.Version {
			t.Errorf("payload %d: %+v, want %+v", i, g, w)
		}
	}
	last := p.Payloads[len(p.Payloads)-1]
	if last.BodyOffset()+int64(last.StoredSize) != p.Size {
		t.Errorf("last payload ends at %d, file has %d bytes", last.BodyOffset()+int64(last.StoredSize), p.Size)
	}
}

func checkMetaRecord(t *testing.T, where string, g MetaRecord, w expectedMeta) {
	t.Helper()
	if g.Length != w.Length || g.Tag != w.Tag || g.Kind != w.Kind {
		t.Errorf("%s: record (len %d, %s, %s), want (len %d, %s, %s)", where, g.Length, g.Tag, g.Kind, w.Length, w.Tag, w.Kind)
		return
	}
	var want any
	switch g.Kind {
	case MetaString:
		var s string
		_ = json.Unmarshal(w.Value, &s)
		want = s
	case MetaDependency, MetaProvider:
		var d struct {
			DepKind DepKind `json:"dep_kind"`
			Name    string  `json:"name"`
		}
		_ = json.Unmarshal(w.Value, &d)
		want = Dependency{Kind: d.DepKind, Name: d.Name}
	case MetaUint64:
		var u uint64
		_ = json.Unmarshal(w.Value, &u)
		want = u
	default:
		t.Errorf("%s: kind %s not expected in test data", where, g.Kind)
		return
	}
	if g.Value() != want {
		t.Errorf("%s (%s): value %#v, want %#v", where, g.Tag, g.Value(), want)
	}
}

func checkMeta(t *testing.T, p *Package, ef *expectedFile) {
	if ef.MetaPayloads[0] == '[' { // a list of payloads, each a list of records
		var payloads [][]expectedMeta
		if err := json.Unmarshal(ef.MetaPayloads, &payloads); err != nil {
			t.Fatal(err)
		}
		if len(payloads) != len(p.Metas) {
			t.Fatalf("%d meta payloads, want %d", len(p.Metas), len(payloads))
		}
		for i, recs := range payloads {
			if len(recs) != len(p.Metas[i].Records) {
				t.Fatalf("meta %d: %d records, want %d", i, len(p.Metas[i].Records), len(recs))
			}
			for j, w := range recs {
				checkMetaRecord(t, fmt.Sprintf("meta %d record %d", i, j), p.Metas[i].Records[j], w)
			}
		}
	} else {
		checkMetaSummary(t, p, ef)
	}
	if p.Prelude.FileType == FileBuildManifest {
		checkManifestMeta(t, p)
	}
}

// checkMetaSummary compares the short form expected.json has for files
// with many Meta payloads.
func checkMetaSummary(t *testing.T, p *Package, ef *expectedFile) {
	var m struct {
		Count        int            `json:"count"`
		First        []expectedMeta `json:"first"`
		RecordCounts []int          `json:"record_counts"`
	}
	if err := json.Unmarshal(ef.MetaPayloads, &m); err != nil {
		t.Fatal(err)
	}
	if len(p.Metas) != m.Count || len(m.RecordCounts) != m.Count {
		t.Fatalf("%d meta payloads, want %d", len(p.Metas), m.Count)
	}
	for i, n := range m.RecordCounts {
		if len(p.Metas[i].Records) != n {
			t.Errorf("meta %d: %d records, want %d", i, len(p.Metas[i].Records), n)
		}
	}
	for j, w := range m.First {
		checkMetaRecord(t, fmt.Sprintf("meta 0 record %d", j), p.Metas[0].Records[j], w)
	}
}

func checkManifestMeta(t *testing.T, p *Package) {
	// Manifests: BuildRelease 0, and typed fields agree with the records.
	for i, meta := range p.Metas {
		if meta.BuildRelease != 0 || meta.Name == "" || meta.Architecture != "x86_64" {
			t.Errorf("manifest meta %d: name %q arch %q build release %d", i, meta.Name, meta.Architecture, meta.BuildRelease)
		}
		var deps, provides, builddeps int
		for _, r := range meta.Records {
			switch r.Tag {
			case TagDepends:
				deps++
			case TagProvides:
				provides++
			case TagBuildDepends:
				builddeps++
			}
		}
		if deps != len(meta.Depends) || provides != len(meta.Provides) || builddeps != len(meta.BuildDepends) {
			t.Errorf("manifest meta %d: typed fields lost records", i)
		}
	}
}

func checkLayout(t *testing.T, p *Package, ef *expectedFile) {
	if ef.Layout == nil {
		if p.Layout != nil || p.Index != nil || p.Content() != nil {
			t.Error("manifest with layout, index or content")
		}
		return
	}
	if len(p.Layout) != ef.Layout.Count {
		t.Fatalf("%d layout entries, want %d", len(p.Layout), ef.Layout.Count)
	}
	byType := map[string]int{}
	for _, e := range p.Layout {
		byType[fmt.Sprint(int(e.Type))]++
		if strings.HasSuffix(e.Target, "\x00") || strings.HasSuffix(e.Source, "\x00") {
			t.Errorf("%q: NUL not trimmed", e.Target)
		}
	}
	if fmt.Sprint(byType) != fmt.Sprint(ef.Layout.ByType) {
		t.Errorf("layout by type %v, want %v", byType, ef.Layout.ByType)
	}
	for i, w := range ef.Layout.First {
		g := p.Layout[i]
		if g.UID != w.UID || g.GID != w.GID || fmt.Sprintf("0o%o", g.Mode) != w.Mode || g.Tag != w.Tag || int(g.Type) != w.Type ||
			g.Target != strings.TrimRight(w.Target, "\x00") {
			t.Errorf("layout %d: %+v, want %+v", i, g, w)
		}
		switch g.Type {
		case LayoutRegular:
			if g.Digest.String() != w.SourceHex {
				t.Errorf("layout %d: digest %s, want %s", i, g.Digest, w.SourceHex)
			}
		case LayoutSymlink:
			if g.Source != strings.TrimRight(w.Source, "\x00") {
				t.Errorf("layout %d: source %q, want %q", i, g.Source, w.Source)
			}
		}
	}
}

func checkIndex(t *testing.T, p *Package, ef *expectedFile) {
	if ef.Index == nil {
		return
	}
	if len(p.Index) != ef.Index.Count {
		t.Fatalf("%d index entries, want %d", len(p.Index), ef.Index.Count)
	}
	for i, w := range ef.Index.First {
		g := p.Index[i]
		if g.Start != w.Start || g.End != w.End || g.Digest.String() != w.Digest {
			t.Errorf("index %d: %+v, want %+v", i, g, w)
		}
	}
	if p.Content() == nil || p.Content().PlainSize != *ef.ContentPlainSize {
		t.Errorf("content header %+v, want plain size %d", p.Content(), *ef.ContentPlainSize)
	}
	// Every range verifies (the reader checks XXH3-128 at each end), and
	// together they cover the whole content.
	ranges, total := 0, uint64(0)
	err := p.WalkContent(context.Background(), func(e IndexEntry, r io.Reader) error {
		n, err := io.Copy(io.Discard, r)
		ranges++
		total += uint64(n)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	nonEmpty := 0
	for _, e := range p.Index {
		if e.Size() > 0 {
			nonEmpty++
		}
	}
	if ranges != nonEmpty || total != *ef.ContentPlainSize {
		t.Errorf("walked %d ranges, %d bytes; want %d ranges, %d bytes", ranges, total, nonEmpty, *ef.ContentPlainSize)
	}
	// moss CAS naming, leading zeros included.
	for _, c := range append(append([]casPath{}, ef.CASSample...), ef.CASLeadingZero...) {
		var x XXH128
		if _, err := hex.Decode(x[:], []byte(c.Digest)); err != nil {
			t.Fatal(err)
		}
		if got := MossAssetPath(x); got != c.Path {
			t.Errorf("MossAssetPath(%s) = %s, want %s", c.Digest, got, c.Path)
		}
	}
	zeros := 0
	for _, e := range p.Index {
		if e.Digest[0]>>4 == 0 {
			zeros++
		}
	}
	if zeros != *ef.LeadingZeroCount {
		t.Errorf("%d digests with a leading 0, want %d", zeros, *ef.LeadingZeroCount)
	}
}

func TestMetaFields(t *testing.T) {
	p := openBytes(t, readStone(t, "bash-completion-2.11-1-1-x86_64.stone"), "bash-completion")
	m := p.Meta
	if m.Name != "bash-completion" || m.Version != "2.11" || m.Release != 1 || m.BuildRelease != 1 || m.Architecture != "x86_64" ||
		m.Summary != "Programmable completion functions for bash" || m.Homepage != "https://github.com/scop/bash-completion" ||
		m.SourceID != "bash-completion" || fmt.Sprint(m.Licenses) != "[GPL-2.0-or-later]" ||
		fmt.Sprint(m.Provides) != "[cmake(bash-completion)]" || len(m.Depends) != 0 {
		t.Errorf("meta %+v", m)
	}
	if p.ID() != "bash-completion-2.11-1.x86_64" || m.FileName() != "bash-completion-2.11-1-1-x86_64.stone" {
		t.Errorf("id %s, file name %s", p.ID(), m.FileName())
	}
	if fmt.Sprint(m.AllProvides()) != "[name(bash-completion) cmake(bash-completion)]" {
		t.Errorf("AllProvides %v", m.AllProvides())
	}
	pizza := openBytes(t, readStone(t, "italian-pizza-1-1-1-x86_64.stone"), "pizza")
	if fmt.Sprint(pizza.Meta.Conflicts) != "[name(pineapple)]" || pizza.ID() != "italian-pizza-1-1.x86_64" {
		t.Errorf("italian-pizza conflicts %v, id %s", pizza.Meta.Conflicts, pizza.ID())
	}
	bash := openBytes(t, readStone(t, "manifests/bash.manifest.x86_64.bin"), "bash manifest")
	var texts []string
	for _, d := range bash.Meta.Depends {
		texts = append(texts, d.String())
	}
	if want := "interpreter(/usr/lib/ld-linux-x86-64.so.2(x86_64)) soname(libc.so.6(x86_64)) soname(libm.so.6(x86_64)) soname(libreadline.so.8(x86_64))"; strings.Join(texts, " ") != want {
		t.Errorf("bash depends %q", texts)
	}
	if bash.Prelude.FileType != FileBuildManifest || bash.Prelude.FileType.String() != "BuildManifest" || len(bash.Meta.BuildDepends) == 0 {
		t.Errorf("bash manifest: %s, %d build deps", bash.Prelude.FileType, len(bash.Meta.BuildDepends))
	}
	for k, s := range map[DepKind]string{DepPackageName: "name", DepSharedLibrary: "soname", DepPkgConfig: "pkgconfig",
		DepInterpreter: "interpreter", DepCMake: "cmake", DepPython: "python", DepBinary: "binary", DepSystemBinary: "sysbinary", DepPkgConfig32: "pkgconfig32"} {
		if k.String() != s {
			t.Errorf("DepKind(%d) = %s, want %s", k, k, s)
		}
	}
}

// payloadSpan locates payload i of a well-formed stone (test helper, trusting the input).
func payloadSpan(data []byte, i int) (hdr int, body []byte) {
	off := 32
	for j := 0; ; j++ {
		stored := int(binary.BigEndian.Uint64(data[off:]))
		if j == i {
			return off, data[off+32 : off+32+stored]
		}
		off += 32 + stored
	}
}
