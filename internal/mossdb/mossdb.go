// Package mossdb reads a moss installation: its databases (.moss/db/state,
// db/layout, db/install, SQLite, schema version 1) opened read-only while
// moss's own lock (.moss/.moss-lockfile) is held shared, so a moss client
// writing at the same time is waited for and never disturbed. Every value
// read is checked before use (see ParseLayout): the databases are input.
//
// It uses modernc.org/sqlite (pure Go, so binaries stay static); only
// moss-compose links it.
package mossdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// SchemaVersion is the only PRAGMA user_version this package reads.
const SchemaVersion = 1

// Paths inside an installation root.
const (
	MossDir   = ".moss"
	LockFile  = ".moss/.moss-lockfile"
	AssetsDir = ".moss/assets/v2"
	StateDB   = ".moss/db/state"
	LayoutDB  = ".moss/db/layout"
	InstallDB = ".moss/db/install"
	// ArchiveDir holds archived states' trees: ArchiveDir/<id>/usr.
	ArchiveDir = ".moss/root"
)

// Install is an opened moss installation. It holds moss's lock (shared)
// until Close.
type Install struct {
	Root    string
	lock    *os.File
	state   *sql.DB
	layout  *sql.DB
	install *sql.DB
}

// Open takes moss's lock shared (calling waiting first if a writer holds
// it, then waiting for it) and opens the three databases read-only,
// refusing a schema version other than SchemaVersion.
func Open(root string, waiting func()) (*Install, error) {
	if st, err := os.Stat(filepath.Join(root, MossDir)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("moss installation %s: no %s directory", root, MossDir)
	}
	in := &Install{Root: root}
	lk, err := lockShared(filepath.Join(root, LockFile), waiting)
	if err != nil {
		return nil, err
	}
	in.lock = lk
	for _, d := range []struct {
		db   **sql.DB
		name string
	}{{&in.state, StateDB}, {&in.layout, LayoutDB}, {&in.install, InstallDB}} {
		if *d.db, err = openDB(filepath.Join(root, d.name)); err != nil {
			in.Close()
			return nil, err
		}
	}
	return in, nil
}

// lockShared flocks moss's lock file shared. moss creates the file when it
// first writes; where it is missing and cannot be created (a read-only
// installation) nothing can write, so no lock is needed.
func lockShared(path string, waiting func()) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.EROFS) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("moss lock %s: %w", path, err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		if waiting != nil {
			waiting()
		}
		for err = unix.EINTR; err == unix.EINTR; {
			err = unix.Flock(int(f.Fd()), unix.LOCK_SH)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("moss lock %s: %w", path, err)
	}
	return f, nil
}

func openDB(path string) (*sql.DB, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("moss database: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("moss database %s: not a regular file", path)
	}
	u := url.URL{Scheme: "file", Path: path, RawQuery: "mode=ro&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("moss database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	var v int64
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("moss database %s: %w", path, err)
	}
	if v != SchemaVersion {
		db.Close()
		return nil, fmt.Errorf("moss database %s: schema version %d (PRAGMA user_version); this mossfs reads version %d", path, v, SchemaVersion)
	}
	return db, nil
}

// Close releases the databases and moss's lock.
func (in *Install) Close() error {
	var errs []error
	for _, db := range []*sql.DB{in.state, in.layout, in.install} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if in.lock != nil {
		errs = append(errs, in.lock.Close())
		in.lock = nil
	}
	return errors.Join(errs...)
}

// State is one row of db/state.
type State struct {
	ID          uint64    `json:"id"`
	Type        string    `json:"type"`
	Created     time.Time `json:"created"`
	Summary     string    `json:"summary,omitempty"`
	Description string    `json:"description,omitempty"`
}

// States returns every state, by ascending id.
func (in *Install) States(ctx context.Context) ([]State, error) {
	rows, err := in.state.QueryContext(ctx, "SELECT id, type, created, summary, description FROM state ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.path(StateDB), err)
	}
	defer rows.Close()
	var out []State
	for rows.Next() {
		var id, created int64
		var typ string
		var sum, desc sql.NullString
		if err := rows.Scan(&id, &typ, &created, &sum, &desc); err != nil {
			return nil, fmt.Errorf("%s: state row: %w", in.path(StateDB), err)
		}
		if id <= 0 {
			return nil, fmt.Errorf("%s: state id %d is not positive", in.path(StateDB), id)
		}
		out = append(out, State{ID: uint64(id), Type: typ, Created: time.Unix(created, 0).UTC(), Summary: sum.String, Description: desc.String})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", in.path(StateDB), err)
	}
	return out, nil
}

// Selection is one package selected by a state.
type Selection struct {
	PackageID string `json:"package"`
	Explicit  bool   `json:"explicit"`
	Reason    string `json:"reason,omitempty"`
}

// Selections returns the packages a state selects, in state_selections
// order (the order moss inserted them: rowid). A state that does not exist
// is an error naming the states that do.
func (in *Install) Selections(ctx context.Context, id uint64) ([]Selection, error) {
	var n int
	if err := in.state.QueryRowContext(ctx, "SELECT count(*) FROM state WHERE id = ?", int64(id)).Scan(&n); err != nil {
		return nil, fmt.Errorf("%s: %w", in.path(StateDB), err)
	}
	if n == 0 {
		states, _ := in.States(ctx)
		ids := make([]string, len(states))
		for i, s := range states {
			ids[i] = fmt.Sprint(s.ID)
		}
		have := "none"
		if len(ids) > 0 {
			have = strings.Join(ids, " ")
		}
		return nil, fmt.Errorf("moss state %d does not exist in %s (states: %s): %w", id, in.path(StateDB), have, ErrNoState)
	}
	rows, err := in.state.QueryContext(ctx, "SELECT package_id, explicit, reason FROM state_selections WHERE state_id = ? ORDER BY rowid", int64(id))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.path(StateDB), err)
	}
	defer rows.Close()
	var out []Selection
	seen := map[string]bool{}
	for rows.Next() {
		var s Selection
		var reason sql.NullString
		if err := rows.Scan(&s.PackageID, &s.Explicit, &reason); err != nil {
			return nil, fmt.Errorf("%s: state %d selection: %w", in.path(StateDB), id, err)
		}
		if s.PackageID == "" || seen[s.PackageID] {
			return nil, fmt.Errorf("%s: state %d: empty or repeated package id %q", in.path(StateDB), id, s.PackageID)
		}
		seen[s.PackageID] = true
		s.Reason = reason.String
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", in.path(StateDB), err)
	}
	return out, nil
}

// ErrNoState is wrapped by Selections for a state id that does not exist.
var ErrNoState = errors.New("no such moss state")

// Layout returns the checked layout rows of the given packages, per
// package in layout.id order. A row that fails its check is an error
// naming it (ParseLayout).
func (in *Install) Layout(ctx context.Context, packages []string) (map[string][]Entry, error) {
	want := make(map[string]bool, len(packages))
	for _, p := range packages {
		want[p] = true
	}
	// db/layout has no index on package_id: one scan of the table beats a
	// scan per package.
	rows, err := in.layout.QueryContext(ctx, "SELECT id, package_id, uid, gid, mode, tag, entry_type, entry_value1, entry_value2 FROM layout ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.path(LayoutDB), err)
	}
	defer rows.Close()
	out := make(map[string][]Entry, len(packages))
	for rows.Next() {
		var r RawLayout
		var v1, v2 sql.NullString
		if err := rows.Scan(&r.ID, &r.PackageID, &r.UID, &r.GID, &r.Mode, &r.Tag, &r.Type, &v1, &v2); err != nil {
			return nil, fmt.Errorf("%s: layout row: %w", in.path(LayoutDB), err)
		}
		if !want[r.PackageID] {
			continue
		}
		if v1.Valid {
			r.Value1 = &v1.String
		}
		if v2.Valid {
			r.Value2 = &v2.String
		}
		e, err := ParseLayout(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.path(LayoutDB), err)
		}
		out[r.PackageID] = append(out[r.PackageID], e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", in.path(LayoutDB), err)
	}
	return out, nil
}

// Package is a package's metadata from db/install.
type Package struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Version      string   `json:"version"`
	Release      uint64   `json:"release"`
	BuildRelease uint64   `json:"build_release"`
	Architecture string   `json:"architecture"`
	Providers    []string `json:"providers,omitempty"`
	Conflicts    []string `json:"conflicts,omitempty"`
}

// Packages returns the metadata of the given packages; one missing from
// db/install is an error naming it.
func (in *Install) Packages(ctx context.Context, ids []string) (map[string]Package, error) {
	out := make(map[string]Package, len(ids))
	get := in.install
	for _, id := range ids {
		var p Package
		var rel, build int64
		err := get.QueryRowContext(ctx, "SELECT package, name, version_identifier, source_release, build_release, architecture FROM meta WHERE package = ?", id).
			Scan(&p.ID, &p.Name, &p.Version, &rel, &build, &p.Architecture)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("%s: package %s is selected but has no meta row", in.path(InstallDB), id)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: package %s: %w", in.path(InstallDB), id, err)
		}
		if err := checkName(p.Name); err != nil {
			return nil, fmt.Errorf("%s: package %s: name %q: %w", in.path(InstallDB), id, p.Name, err)
		}
		if err := checkName(p.Version); err != nil {
			return nil, fmt.Errorf("%s: package %s: version %q: %w", in.path(InstallDB), id, p.Version, err)
		}
		if rel < 0 || build < 0 {
			return nil, fmt.Errorf("%s: package %s: negative release %d or build release %d", in.path(InstallDB), id, rel, build)
		}
		p.Release, p.BuildRelease = uint64(rel), uint64(build)
		for _, q := range []struct {
			list *[]string
			sql  string
		}{
			{&p.Providers, "SELECT provider FROM meta_providers WHERE package = ? ORDER BY provider"},
			{&p.Conflicts, "SELECT conflict FROM meta_conflicts WHERE package = ? ORDER BY conflict"},
		} {
			rows, err := get.QueryContext(ctx, q.sql, id)
			if err != nil {
				return nil, fmt.Errorf("%s: package %s: %w", in.path(InstallDB), id, err)
			}
			for rows.Next() {
				var v string
				if err := rows.Scan(&v); err != nil {
					rows.Close()
					return nil, fmt.Errorf("%s: package %s: %w", in.path(InstallDB), id, err)
				}
				*q.list = append(*q.list, v)
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: package %s: %w", in.path(InstallDB), id, err)
			}
		}
		out[id] = p
	}
	return out, nil
}

// checkName accepts what can be shown and recorded as a package name or
// version: printable, no slash-free requirement, no control characters.
func checkName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 255 {
		return fmt.Errorf("%d bytes", len(s))
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("control character")
		}
	}
	return nil
}

func (in *Install) path(name string) string { return filepath.Join(in.Root, name) }

// AssetsPath returns moss's content store under an installation root; a
// content x is at stone.MossAssetPath(x) in it (unpadded hex).
func AssetsPath(root string) string { return filepath.Join(root, AssetsDir) }
