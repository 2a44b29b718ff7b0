package adopt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/zeebo/xxh3"
)

// This file builds moss installations the way moss writes them, for the
// tests: assets under .moss/assets/v2 at moss's unpadded-hex paths, and the
// three databases written by Debian's sqlite3 command (not our Go driver)
// with moss's schema and values: decimal digests, package ids that are the
// .stone's SHA-256, u32 owners stored as i32, state_selections in order.

// tRow is one layout row as a test writes it.
type tRow struct {
	typ    string // regular, symlink, directory, character-device, …
	path   string // relative to /usr (stored as is: tests put bad ones here)
	mode   uint32 // permission bits (the type bits are added)
	uid    uint32
	gid    uint32
	data   []byte // regular files
	target string // symlinks
}

// tPkg is a package of a test installation.
type tPkg struct {
	id        string
	name      string
	version   string
	release   uint64
	build     uint64
	rows      []tRow
	providers []string
}

func reg(path string, mode uint32, data string) tRow {
	return tRow{typ: "regular", path: path, mode: mode, data: []byte(data)}
}
func sym(path, target string) tRow {
	return tRow{typ: "symlink", path: path, mode: 0o777, target: target}
}
func dir(path string, mode uint32) tRow {
	return tRow{typ: "directory", path: path, mode: mode}
}

func xxh(b []byte) stone.XXH128 { return stone.XXH128(xxh3.Hash128(b).Bytes()) }

// genPkg makes a package with a made-up id (sha256 of its name), as a
// locally installed package would have.
func genPkg(name string, rows ...tRow) tPkg {
	sum := sha256.Sum256([]byte("pkg " + name))
	return tPkg{id: hex.EncodeToString(sum[:]), name: name, version: "1.0", release: 1, build: 1, rows: rows}
}

// stonePkg reads a real .stone: its id is its SHA-256 (PackageHash), as
// moss records packages from a repository.
func stonePkg(t testing.TB, file string) tPkg {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := stone.Open(bytes.NewReader(data), int64(len(data)), file)
	if err != nil {
		t.Fatal(err)
	}
	contents := map[stone.XXH128][]byte{}
	err = p.WalkContent(context.Background(), func(e stone.IndexEntry, r io.Reader) error {
		b, err := io.ReadAll(r)
		contents[e.Digest] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	pk := tPkg{id: hex.EncodeToString(sum[:]), name: p.Meta.Name, version: p.Meta.Version, release: p.Meta.Release, build: p.Meta.BuildRelease}
	for _, d := range p.Meta.Provides {
		pk.providers = append(pk.providers, d.String())
	}
	for _, e := range p.Layout {
		r := tRow{path: e.Target, mode: e.Mode & 0o7777, uid: e.UID, gid: e.GID}
		switch e.Type {
		case stone.LayoutRegular:
			r.typ = "regular"
			if e.Digest != stone.EmptyXXH128 {
				c, ok := contents[e.Digest]
				if !ok {
					t.Fatalf("%s: no content for %s", file, e.Target)
				}
				r.data = c
			}
		case stone.LayoutSymlink:
			r.typ, r.target = "symlink", e.Source
		case stone.LayoutDirectory:
			r.typ = "directory"
		default:
			r.typ = "fifo"
		}
		pk.rows = append(pk.rows, r)
	}
	return pk
}

// tInstall is a moss installation to write.
type tInstall struct {
	pkgs   []tPkg
	states [][]string // package ids per state (state i+1), in selection order
	// archives: files of .moss/root/<id>/usr (path → content; "->x" a symlink)
	archives map[uint64]map[string]string
	// live: the live /usr's files (.stateID included)
	live        map[string]string
	userVersion int
}

var typeBits = map[string]uint32{"regular": 0o100000, "symlink": 0o120000, "directory": 0o040000, "character-device": 0o020000, "block-device": 0o060000, "fifo": 0o010000, "socket": 0o140000}

func sqlStr(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// decimal formats a digest as moss's layout database stores it.
func decimal(x stone.XXH128) string { return new(big.Int).SetBytes(x[:]).String() }

// write lays the installation out under root.
func (in *tInstall) write(t testing.TB, root string) {
	t.Helper()
	if _, err := exec.LookPath("sqlite3"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("sqlite3 missing (make test installs it)")
		}
		t.Skip("sqlite3 missing")
	}
	moss := filepath.Join(root, ".moss")
	for _, d := range []string{"db", "assets/v2", "root", "cache"} {
		if err := os.MkdirAll(filepath.Join(moss, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(moss, ".moss-lockfile"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	uv := in.userVersion
	if uv == 0 {
		uv = 1
	}
	var layout, install, st strings.Builder
	fmt.Fprintf(&layout, "PRAGMA user_version = %d;\nBEGIN;\n%s\n", uv, layoutSchema)
	fmt.Fprintf(&install, "PRAGMA user_version = %d;\nBEGIN;\n%s\n", uv, metaSchema)
	fmt.Fprintf(&st, "PRAGMA user_version = %d;\nBEGIN;\n%s\n", uv, stateSchema)
	for _, p := range in.pkgs {
		fmt.Fprintf(&install, "INSERT INTO meta VALUES (%s, %s, %s, %d, %d, 'x86_64', 'summary', 'description', %s, 'https://example.org', NULL, %s, 1);\n",
			sqlStr(p.id), sqlStr(p.name), sqlStr(p.version), p.release, p.build, sqlStr(p.name), sqlStr(p.id))
		for _, pr := range p.providers {
			fmt.Fprintf(&install, "INSERT INTO meta_providers VALUES (%s, %s);\n", sqlStr(p.id), sqlStr(pr))
		}
		for _, r := range p.rows {
			v1, v2 := "NULL", "NULL"
			switch r.typ {
			case "regular":
				x := xxh(r.data)
				v1, v2 = sqlStr(decimal(x)), sqlStr(r.path)
				writeAsset(t, moss, x, r.data)
			case "symlink":
				v1, v2 = sqlStr(r.target), sqlStr(r.path)
			default:
				v1 = sqlStr(r.path)
			}
			// moss stores u32s as i32.
			fmt.Fprintf(&layout, "INSERT INTO layout (package_id, uid, gid, mode, tag, entry_type, entry_value1, entry_value2) VALUES (%s, %d, %d, %d, 0, %s, %s, %s);\n",
				sqlStr(p.id), int32(r.uid), int32(r.gid), int32(typeBits[r.typ]|r.mode), sqlStr(r.typ), v1, v2)
		}
	}
	for i, sel := range in.states {
		fmt.Fprintf(&st, "INSERT INTO state (id, type, created, summary) VALUES (%d, 'transaction', %d, 'state %d');\n", i+1, 1700000000+i, i+1)
		for j, id := range sel {
			fmt.Fprintf(&st, "INSERT INTO state_selections VALUES (%d, %s, %d, NULL);\n", i+1, sqlStr(id), (j+1)%2)
		}
	}
	for _, b := range []*strings.Builder{&layout, &install, &st} {
		b.WriteString("COMMIT;\n")
	}
	sqlite(t, filepath.Join(moss, "db", "layout"), layout.String())
	sqlite(t, filepath.Join(moss, "db", "install"), install.String())
	sqlite(t, filepath.Join(moss, "db", "state"), st.String())
	for id, files := range in.archives {
		writeFiles(t, filepath.Join(moss, "root", strconv.FormatUint(id, 10), "usr"), files)
	}
	if in.live != nil {
		writeFiles(t, filepath.Join(root, "usr"), in.live)
	}
}

func writeAsset(t testing.TB, moss string, x stone.XXH128, data []byte) {
	t.Helper()
	if len(data) == 0 {
		return // moss stores no asset for the empty file
	}
	p := filepath.Join(moss, "assets", "v2", filepath.FromSlash(stone.MossAssetPath(x)))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(c, "->"); ok {
			err = os.Symlink(target, full)
		} else if strings.HasSuffix(p, "/") {
			err = os.MkdirAll(full, 0o750)
		} else {
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func sqlite(t testing.TB, db, script string) {
	t.Helper()
	cmd := exec.Command("sqlite3", "-bail", db)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sqlite3 %s: %v\n%s", db, err, out)
	}
}

// The schemas moss creates (os-tools moss/src/db/*/schemas, version 1).
const layoutSchema = `CREATE TABLE IF NOT EXISTS layout (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    package_id TEXT NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    tag INTEGER NOT NULL,
    entry_type TEXT NOT NULL,
    entry_value1 TEXT NULL,
    entry_value2 TEXT NULL
);`

const stateSchema = `CREATE TABLE IF NOT EXISTS state (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    created BIGINT NOT NULL DEFAULT (unixepoch()),
    summary TEXT NULL,
    description TEXT NULL
);
CREATE TABLE IF NOT EXISTS state_selections (
    state_id INTEGER NOT NULL,
    package_id TEXT NOT NULL,
    explicit BOOLEAN NOT NULL,
    reason TEXT NULL,
    PRIMARY KEY(state_id, package_id),
    FOREIGN KEY(state_id) REFERENCES state(id) ON DELETE CASCADE
);`

const metaSchema = `CREATE TABLE IF NOT EXISTS meta (
    package TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    version_identifier TEXT NOT NULL,
    source_release INT NOT NULL,
    build_release INT NOT NULL,
    architecture TEXT NOT NULL,
    summary TEXT NOT NULL,
    description TEXT NOT NULL,
    source_id TEXT NOT NULL,
    homepage TEXT NOT NULL,
    uri TEXT NULL,
    hash TEXT NULL,
    download_size BIGINT NULL
);
CREATE TABLE IF NOT EXISTS meta_licenses (package TEXT NOT NULL, license TEXT NOT NULL, PRIMARY KEY (package, license), FOREIGN KEY (package) REFERENCES meta(package) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS meta_dependencies (package TEXT NOT NULL, dependency TEXT NOT NULL, PRIMARY KEY (package, dependency), FOREIGN KEY (package) REFERENCES meta(package) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS meta_providers (package TEXT NOT NULL, provider TEXT NOT NULL, PRIMARY KEY (package, provider), FOREIGN KEY (package) REFERENCES meta(package) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS meta_conflicts (package TEXT NOT NULL, conflict TEXT NOT NULL, PRIMARY KEY (package, conflict), FOREIGN KEY (package) REFERENCES meta(package) ON DELETE CASCADE);`

func stonesDir(t testing.TB) string { return testenv.SharedPath(t, "testdata", "stones") }
