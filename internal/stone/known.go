package stone

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/zeebo/xxh3"
)

// KnownIndex is the on-disk KnownContent: an append-only log in
// dir/known-content.log of fixed 56-byte records (XXH3-128, fs-verity
// digest, XXH3-64 of those 48 bytes), after an 8-byte header. Each Record is
// one O_APPEND write, so concurrent writers never interleave within a
// record; a record torn by a crash fails its checksum and is cut off when
// the log is next opened. The index is a cache: a lost entry only costs
// decompressing that content again, and Import re-stores a known content
// whose object the store no longer has.
type KnownIndex struct {
	mu   sync.Mutex
	f    *os.File
	path string
	m    map[XXH128][32]byte
}

var knownHeader = [8]byte{'m', 'o', 's', 's', 'x', 'k', '1', '\n'}

const knownRecord = 16 + 32 + 8

// KnownIndexFile is the log's name inside its directory.
const KnownIndexFile = "known-content.log"

// NewKnownIndex opens (creating if needed) the index in dir.
func NewKnownIndex(dir string) (*KnownIndex, error) {
	// Under the state root: private to its owner, as everything there
	// but the records state.PublicRecords lists.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("known-content index: %w", err)
	}
	p := filepath.Join(dir, KnownIndexFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("known-content index: %w", err)
	}
	k := &KnownIndex{f: f, path: p, m: map[XXH128][32]byte{}}
	if err := k.load(); err != nil {
		f.Close()
		return nil, err
	}
	return k, nil
}

func (k *KnownIndex) load() error {
	data, err := io.ReadAll(k.f)
	if err != nil {
		return fmt.Errorf("known-content index %s: %w", k.path, err)
	}
	if len(data) < len(knownHeader) {
		// New, or torn while the header was written: start afresh.
		if err := k.f.Truncate(0); err != nil {
			return fmt.Errorf("known-content index %s: %w", k.path, err)
		}
		if _, err := k.f.Write(knownHeader[:]); err != nil {
			return fmt.Errorf("known-content index %s: %w", k.path, err)
		}
		return nil
	}
	if !bytes.Equal(data[:len(knownHeader)], knownHeader[:]) {
		return fmt.Errorf("known-content index %s: not a known-content log (header %q)", k.path, data[:len(knownHeader)])
	}
	off := len(knownHeader)
	for ; off+knownRecord <= len(data); off += knownRecord {
		r := data[off : off+knownRecord]
		if xxh3.Hash(r[:48]) != binary.BigEndian.Uint64(r[48:]) {
			break
		}
		k.m[XXH128(r[:16])] = [32]byte(r[16:48])
	}
	if off != len(data) {
		// A torn or damaged tail: drop it so that appends stay aligned.
		if err := k.f.Truncate(int64(off)); err != nil {
			return fmt.Errorf("known-content index %s: cutting a damaged tail at %d: %w", k.path, off, err)
		}
	}
	return nil
}

// Lookup returns the fs-verity digest recorded for a content.
func (k *KnownIndex) Lookup(xxh [16]byte) ([32]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.m[xxh]
	return d, ok
}

// Record appends a mapping (nothing if it is already recorded).
func (k *KnownIndex) Record(xxh [16]byte, digest [32]byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if d, ok := k.m[xxh]; ok && d == digest {
		return nil
	}
	var r [knownRecord]byte
	copy(r[:16], xxh[:])
	copy(r[16:48], digest[:])
	binary.BigEndian.PutUint64(r[48:], xxh3.Hash(r[:48]))
	if _, err := k.f.Write(r[:]); err != nil {
		return fmt.Errorf("known-content index %s: %w", k.path, err)
	}
	k.m[xxh] = digest
	return nil
}

// Len is the number of contents recorded.
func (k *KnownIndex) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// Sync makes the records written so far durable. Call it after the store's
// Sync, so that no durable record names an object that is not.
func (k *KnownIndex) Sync() error {
	if err := k.f.Sync(); err != nil {
		return fmt.Errorf("known-content index %s: %w", k.path, err)
	}
	return nil
}

// Close closes the log.
func (k *KnownIndex) Close() error { return k.f.Close() }

var _ KnownContent = (*KnownIndex)(nil)
