package state

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mossfs/mossfs/internal/durable"
	"github.com/mossfs/mossfs/internal/jsonpeek"
	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/smallfile"
)

// Transaction is the metadata record of one transaction.
type Transaction struct {
	ID uint64 `json:"id"`
	// Parent is the transaction this one was composed from (--from), 0 if none.
	Parent uint64    `json:"parent,omitempty"`
	Time   time.Time `json:"time"`
	// Image is the hex fs-verity digest of the image (its name under images/).
	Image  string  `json:"image"`
	Inputs []Input `json:"inputs"`
	// Triggers are the transaction triggers the tree hit, in run order.
	Triggers []TriggerRecord `json:"triggers,omitempty"`
	Counts   Counts          `json:"counts"`
	// Moss is set on a transaction adopted from a moss state (whose id it
	// keeps).
	Moss *MossOrigin `json:"moss,omitempty"`
}

// MossOrigin says which moss state a transaction was adopted from.
type MossOrigin struct {
	// Root is the moss installation root (the directory holding .moss).
	Root string `json:"root"`
	// State is moss's state id, which is also the transaction's id.
	State uint64 `json:"state"`
	// Selection is the SHA-256 (hex) of the state's selected package ids in
	// order: adopting the state again with the same selection is a no-op.
	Selection string `json:"selection"`
	// Extras is the directory that files no layout row names were taken
	// from (moss's archived tree of the state), if any.
	Extras string `json:"extras,omitempty"`
}

// Input kinds.
const (
	KindStone = "stone"
	KindTree  = "tree"
	// KindDump is a composefs dump (composefs-dump(5)): a tree whose
	// contents are named by digest and taken from the store or a digest
	// store (mkcomposefs --digest-store, containers/storage).
	KindDump = "dump"
)

// Input is one input of a transaction: a package or a tree, recorded as a
// fragment (a composefs dump of what it contributes, placed at its prefix).
type Input struct {
	Kind string `json:"kind"`
	// Name is the package name, or for a tree the directory it came from.
	Name string `json:"name"`
	// Version is "version-release-build" for packages.
	Version string `json:"version,omitempty"`
	// Prefix is where a tree was placed inside the image ("/" = its root).
	Prefix string `json:"prefix,omitempty"`
	// Source is the file or directory the input was imported from.
	Source string `json:"source,omitempty"`
	// Package is moss's package id (the .stone's SHA-256) of a package
	// adopted from a moss installation.
	Package string `json:"package_id,omitempty"`
	// Provides and Conflicts are a package's dependency strings
	// ("name(pineapple)", "soname(libz.so.1(x86_64))"); every package
	// implicitly provides name(<Name>). A conflict matches another input's
	// provides; a bare name means name(<name>).
	Provides  []string `json:"provides,omitempty"`
	Conflicts []string `json:"conflicts,omitempty"`
	// Fragment is the fragment's file name under <id>.inputs/, and Digest
	// the SHA-256 (hex) of the fragment, which names it: "<digest>.dump".
	Fragment string `json:"fragment"`
	Digest   string `json:"digest"`
	// Entries and Bytes count the fragment's entries and regular-file bytes.
	Entries int    `json:"entries"`
	Bytes   uint64 `json:"bytes"`
}

// Key identifies an input for replacement: a newer input with the same key
// replaces an older one (package upgrade, re-imported tree).
func (in Input) Key() string {
	if in.Kind == KindTree || in.Kind == KindDump {
		return in.Kind + ":" + in.Prefix + ":" + in.Name
	}
	return in.Kind + ":" + in.Name
}

// Label is how an input is named to users.
func (in Input) Label() string {
	switch in.Kind {
	case KindStone:
		if in.Version != "" {
			return in.Name + "-" + in.Version
		}
		return in.Name
	case KindTree, KindDump:
		if in.Prefix != "" && in.Prefix != "/" {
			return in.Kind + " " + in.Name + " at " + in.Prefix
		}
		return in.Kind + " " + in.Name
	}
	return in.Kind + " " + in.Name
}

// Counts summarises a transaction's image.
type Counts struct {
	Entries  int    `json:"entries"`
	Dirs     int    `json:"dirs"`
	Files    int    `json:"files"`
	Symlinks int    `json:"symlinks"`
	Other    int    `json:"other"`
	Objects  int    `json:"objects"` // distinct external objects
	Bytes    uint64 `json:"bytes"`   // regular-file content bytes
	Image    int64  `json:"image_bytes"`
}

// ImageDigest returns the image's fs-verity digest.
func (tx *Transaction) ImageDigest() ([32]byte, error) {
	var d [32]byte
	b, err := hex.DecodeString(tx.Image)
	if err != nil || len(b) != 32 {
		return d, fmt.Errorf("transaction %d: bad image digest %q", tx.ID, tx.Image)
	}
	copy(d[:], b)
	return d, nil
}

// Get returns the transaction with the given id (ErrNotFound if none).
func (s *State) Get(id uint64) (*Transaction, error) {
	path := s.metaPath(id)
	data, err := s.readMeta(id)
	if err != nil {
		return nil, err
	}
	var tx Transaction
	if err := json.Unmarshal(data, &tx); err != nil {
		return nil, fmt.Errorf("transaction %d: %s: %w", id, path, err)
	}
	if tx.ID != id {
		return nil, fmt.Errorf("transaction %d: %s records id %d", id, path, tx.ID)
	}
	if _, err := tx.ImageDigest(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &tx, nil
}

func (s *State) readMeta(id uint64) ([]byte, error) {
	data, err := smallfile.Read(s.metaPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("transaction %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("transaction %d: %w", id, err)
	}
	return data, nil
}

// ImageOf returns the image digest (hex) of transaction id, as
// Get(id).Image, checked as Get checks it; it reads only the id and image
// members of the record, without encoding/json where they are plain (see
// package jsonpeek): mounting or switching to a transaction needs nothing
// else, and a process that needs no other JSON saves encoding/json's first
// use. Of the other members it checks only that the record is valid JSON.
func (s *State) ImageOf(id uint64) (string, error) {
	data, err := s.readMeta(id)
	if err != nil {
		return "", err
	}
	vals, ok := jsonpeek.Members(data, "id", "image")
	rid, okID := jsonpeek.Uint(vals[0])
	img, okImg := jsonpeek.String(vals[1])
	if !ok || !okID || !okImg {
		tx, err := s.Get(id)
		if err != nil {
			return "", err
		}
		return tx.Image, nil
	}
	tx := Transaction{ID: rid, Image: img}
	if tx.ID != id {
		return "", fmt.Errorf("transaction %d: %s records id %d", id, s.metaPath(id), tx.ID)
	}
	if _, err := tx.ImageDigest(); err != nil {
		return "", fmt.Errorf("%s: %w", s.metaPath(id), err)
	}
	return img, nil
}

// IDs returns the ids of all transactions in ascending order.
func (s *State) IDs() ([]uint64, error) {
	ents, err := os.ReadDir(s.txDir())
	if err != nil {
		return nil, fmt.Errorf("list transactions: %w", err)
	}
	var ids []uint64
	for _, e := range ents {
		if id, ok := parseMetaName(e.Name()); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func parseMetaName(name string) (uint64, bool) {
	num, ok := strings.CutSuffix(name, ".json")
	if !ok || num == "" || num[0] == '0' {
		return 0, false
	}
	id, err := strconv.ParseUint(num, 10, 64)
	return id, err == nil
}

// List returns all transactions in ascending id order.
func (s *State) List() ([]*Transaction, error) {
	ids, err := s.IDs()
	if err != nil {
		return nil, err
	}
	txs := make([]*Transaction, 0, len(ids))
	for _, id := range ids {
		tx, err := s.Get(id)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		txs = append(txs, tx)
	}
	return txs, nil
}

// Active returns the active transaction id, 0 if none is recorded.
func (s *State) Active() (uint64, error) {
	path := filepath.Join(s.root, "active")
	id, _, err := readUint(path)
	if err != nil {
		// Only transactions may be active: say so when the record names a
		// container image (switch, rollback and boot all read it here).
		if data, rerr := os.ReadFile(path); rerr == nil {
			if c := s.containerByAnyDigest(strings.TrimSpace(string(data))); c != nil {
				return 0, fmt.Errorf("active transaction: %s names container image %s, not an OS transaction: only a transaction can be active (mossfs switch TX)", path, c.ConfigDigest)
			}
		}
		return 0, fmt.Errorf("active transaction: %w", err)
	}
	return id, nil
}

// SetActive records id as the active transaction (durably).
//
// The files in also are written in the same batch of durable writes
// (package durable: one fsync round for all), under the same lock.
func (s *State) SetActive(id uint64, also ...durable.File) error {
	if _, err := s.Get(id); err != nil {
		return fmt.Errorf("set active: %w", err)
	}
	u, err := s.BeginSetActive(id, also...)
	if err != nil {
		return err
	}
	return u.Commit()
}

// ActiveUpdate is a change of the active transaction in progress (see
// BeginSetActive).
type ActiveUpdate struct {
	lock  *Lock
	batch *durable.Batch
}

// BeginSetActive starts recording id as the active transaction: under the
// transaction lock (held until Commit or Abort, so that the transaction
// cannot be removed meanwhile) it checks that id still exists (the caller
// has read its record, as SetActive does) and begins a batch
// of durable writes (package durable) with the new active record and the
// files in also, whose data fsyncs run while the caller works. mossfs
// switch begins it, builds and puts the new mount in place, adds the mount
// record and commits; should the mount fail, it aborts and nothing changed.
func (s *State) BeginSetActive(id uint64, also ...durable.File) (*ActiveUpdate, error) {
	l, err := s.txLock()
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(s.metaPath(id)); err != nil {
		l.Unlock()
		if errors.Is(err, os.ErrNotExist) {
			err = ErrNotFound
		}
		return nil, fmt.Errorf("set active: transaction %d: %w", id, err)
	}
	// Through a swap file: active is replaced on every switch (see
	// package durable).
	files := append([]durable.File{{Path: filepath.Join(s.root, "active"), Data: []byte(strconv.FormatUint(id, 10) + "\n"), Perm: publicFileMode, Swap: true}}, also...)
	return &ActiveUpdate{lock: l, batch: durable.Begin(files...)}, nil
}

// Add puts more files in the update's batch.
func (u *ActiveUpdate) Add(files ...durable.File) { u.batch.Add(files...) }

// Commit makes the update durable and visible (durable.Batch.Commit) and
// releases the lock.
func (u *ActiveUpdate) Commit() error {
	defer u.lock.Unlock()
	if err := u.batch.Commit(); err != nil {
		return fmt.Errorf("set active: %w", err)
	}
	return nil
}

// Abort drops the update: the active transaction and the other files stay
// as they were.
func (u *ActiveUpdate) Abort() {
	u.batch.Abort()
	u.lock.Unlock()
}

// reserveID reserves the given id for a compose (--id, or a moss state id):
// it must be neither published nor held by a compose in flight. The
// counter moves past it, so that ids handed out later stay above it. The
// caller holds txLock.
func (s *State) reserveID(id uint64, durable bool) (uint64, error) {
	if _, err := os.Lstat(s.metaPath(id)); err == nil {
		return 0, fmt.Errorf("compose: transaction %d already exists", id)
	}
	if _, err := os.Lstat(s.inputsDir(id)); err == nil {
		return 0, fmt.Errorf("compose: transaction %d is being composed (or a crashed compose left %s; gc removes it)", id, s.inputsDir(id))
	}
	next, _, err := readUint(filepath.Join(s.txDir(), "next"))
	if err != nil {
		return 0, fmt.Errorf("transaction counter: %w", err)
	}
	if next <= id {
		if err := writeFileAtomic(filepath.Join(s.txDir(), "next"), []byte(strconv.FormatUint(id+1, 10)+"\n"), PrivateFileMode, durable); err != nil {
			return 0, fmt.Errorf("transaction counter: %w", err)
		}
	}
	return id, nil
}

// followsMossName is the file that makes a state root follow a moss
// installation: it holds the installation root.
const followsMossName = "follows-moss"

// FollowsMoss returns the moss installation root this state root follows
// ("" if none): its transaction ids are moss's state ids, so a compose
// needs an explicit id.
func (s *State) FollowsMoss() (string, error) {
	data, err := os.ReadFile(filepath.Join(s.root, followsMossName))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("state %s: %w", s.root, err)
	}
	root := strings.TrimSpace(string(data))
	if root == "" {
		root = "/"
	}
	return root, nil
}

// SetFollowsMoss makes the state root follow the moss installation at
// mossRoot (see FollowsMoss).
func (s *State) SetFollowsMoss(mossRoot string) error {
	if cur, err := s.FollowsMoss(); err != nil || cur == mossRoot {
		return err
	}
	return writeFileAtomic(filepath.Join(s.root, followsMossName), []byte(mossRoot+"\n"), PrivateFileMode, true)
}

// allocateID reserves the next transaction id: max(counter, highest
// existing id + 1). The caller holds txLock. The counter update becomes
// durable (here, or with the syncfs that precedes publishing) before the
// transaction is published, so a published id is never handed out again.
func (s *State) allocateID(durable bool) (uint64, error) {
	next, _, err := readUint(filepath.Join(s.txDir(), "next"))
	if err != nil {
		return 0, fmt.Errorf("transaction counter: %w", err)
	}
	if next == 0 {
		next = 1
	}
	ids, err := s.IDs()
	if err != nil {
		return 0, err
	}
	if len(ids) > 0 && ids[len(ids)-1] >= next {
		next = ids[len(ids)-1] + 1
	}
	// Inputs directories of unpublished composes also hold ids.
	ents, _ := os.ReadDir(s.txDir())
	for _, e := range ents {
		if num, ok := strings.CutSuffix(e.Name(), ".inputs"); ok {
			if id, err := strconv.ParseUint(num, 10, 64); err == nil && id >= next {
				next = id + 1
			}
		}
	}
	if err := writeFileAtomic(filepath.Join(s.txDir(), "next"), []byte(strconv.FormatUint(next+1, 10)+"\n"), PrivateFileMode, durable); err != nil {
		return 0, fmt.Errorf("transaction counter: %w", err)
	}
	return next, nil
}

// MountRecord says that a transaction (or an image: Tx 0) is mounted
// somewhere. The mount helper (package mountrec, same format) writes one per
// mount target under <root>/mounts/ and removes it on unmount; such
// transactions are gc roots and are not removed without force.
type MountRecord struct {
	Tx uint64 `json:"tx"`
	// Image is the hex digest of the mounted image: gc keeps it and its
	// objects even if the transaction is removed with force.
	Image  string    `json:"image,omitempty"`
	Target string    `json:"target"`
	Driver string    `json:"driver,omitempty"`
	PID    int       `json:"pid,omitempty"`
	Time   time.Time `json:"time"`
	// BootID is the kernel boot id of the boot that made the mount.
	BootID string `json:"boot_id,omitempty"`
	// Name is the record's file name (set when read).
	Name string `json:"-"`
}

// MountRecordName returns the file name used for a mount target.
func MountRecordName(target string) string {
	t := strings.Trim(filepath.Clean(target), "/")
	if t == "" {
		t = "root"
	}
	return strings.ReplaceAll(t, "/", "-") + ".json"
}

// WriteMount records a mount atomically; the record's name derives from its target.
func (s *State) WriteMount(rec MountRecord) error {
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	if rec.BootID == "" {
		rec.BootID = mountrec.BootID()
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if _, err := s.PrivateDir("mounts"); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(s.root, "mounts", MountRecordName(rec.Target)), append(data, '\n'), PrivateFileMode, true); err != nil {
		return fmt.Errorf("mount record: %w", err)
	}
	return nil
}

// RemoveMount deletes the record of the mount at target.
func (s *State) RemoveMount(target string) error {
	err := os.Remove(filepath.Join(s.root, "mounts", MountRecordName(target)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mount record: %w", err)
	}
	return nil
}

// Mounts returns the mount records. A record is a JSON object with a "tx"
// (or "transaction"/"id") number, or a bare decimal id; files starting with
// "." are temporary and skipped, and so are records an earlier boot wrote:
// their mounts are gone, so they neither protect a transaction from
// removal nor keep its image from gc.
func (s *State) Mounts() ([]MountRecord, error) {
	dir := filepath.Join(s.root, "mounts")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mount records: %w", err)
	}
	var recs []MountRecord
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("mount records: %w", err)
		}
		rec, err := parseMountRecord(data)
		if err != nil {
			return nil, fmt.Errorf("mount record %s: %w", path, err)
		}
		rec.Name = e.Name()
		if mountrec.StaleBootID(rec.BootID) {
			continue
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

func parseMountRecord(data []byte) (MountRecord, error) {
	txt := strings.TrimSpace(string(data))
	if id, err := strconv.ParseUint(txt, 10, 64); err == nil {
		if id == 0 {
			return MountRecord{}, errors.New("transaction id 0")
		}
		return MountRecord{Tx: id}, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return MountRecord{}, fmt.Errorf("neither a decimal id nor a JSON object: %w", err)
	}
	var rec MountRecord
	_ = json.Unmarshal(data, &rec)
	if rec.Tx == 0 {
		for _, k := range []string{"transaction", "id", "tx_id"} {
			if v, ok := raw[k]; ok {
				if err := json.Unmarshal(v, &rec.Tx); err == nil {
					break
				}
			}
		}
	}
	if rec.Tx == 0 && rec.Image == "" {
		return rec, errors.New(`neither a transaction id ("tx") nor an image`)
	}
	return rec, nil
}

// Pins returns the gc roots recorded under pins/: transaction ids and image
// digests (hex). Each file holds a decimal id or "sha256:<hex>".
func (s *State) Pins() (txs []uint64, images []string, err error) {
	dir := filepath.Join(s.root, "pins")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pins: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("pins: %w", err)
		}
		v := strings.TrimSpace(string(data))
		if h, ok := strings.CutPrefix(v, "sha256:"); ok {
			if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
				return nil, nil, fmt.Errorf("pin %s: bad image digest %q", path, v)
			}
			images = append(images, strings.ToLower(h))
			continue
		}
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("pin %s: want a transaction id or sha256:<hex>, got %q", path, v)
		}
		txs = append(txs, id)
	}
	return txs, images, nil
}

// Pin records a gc root named name: a transaction id or an image digest.
func (s *State) Pin(name, value string) error {
	if strings.ContainsAny(name, "/\x00") || name == "" || strings.HasPrefix(name, ".") {
		return fmt.Errorf("pin: bad name %q", name)
	}
	if _, err := s.PrivateDir("pins"); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.root, "pins", name), []byte(value+"\n"), PrivateFileMode, true)
}

// Unpin removes a gc root.
func (s *State) Unpin(name string) error {
	err := os.Remove(filepath.Join(s.root, "pins", name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpin: %w", err)
	}
	return nil
}

// ParseIDs parses transaction id arguments: decimal ids and inclusive
// ranges "5-14", each argument possibly holding several separated by
// spaces or commas. Duplicates are removed; the result is sorted.
func ParseIDs(args []string) ([]uint64, error) {
	seen := map[uint64]bool{}
	var out []uint64
	add := func(id uint64) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, arg := range args {
		for f := range strings.FieldsFuncSeq(arg, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
			lo, hi, isRange := strings.Cut(f, "-")
			a, err := strconv.ParseUint(lo, 10, 64)
			if err != nil || a == 0 {
				return nil, fmt.Errorf("bad transaction id %q", f)
			}
			if !isRange {
				add(a)
				continue
			}
			b, err := strconv.ParseUint(hi, 10, 64)
			if err != nil || b < a {
				return nil, fmt.Errorf("bad transaction range %q", f)
			}
			if b-a > 1_000_000 {
				return nil, fmt.Errorf("transaction range %q too large", f)
			}
			for id := a; id <= b; id++ {
				add(id)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}
